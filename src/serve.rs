//! `edgecron serve`: the long-running process. [`run`] reads as its steps:
//! 1. close the runs a dead process left running, and recreate capture triggers found gone;
//! 2. listen on `EDGECRON_LISTEN` with the trigger secrets (generated if unset);
//! 3. start the watcher and the scheduler threads;
//! 4. wait for SIGTERM or SIGINT;
//! 5. stop: no new runs, running jobs given the shutdown grace, then the runs still going
//!    recorded as failed, or the last responses delivered.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::http::{self, App, Auth};
use crate::process::Process;
use crate::runner::Runner;
use crate::scheduler::{self, PlannedJob};
use crate::shutdown::Shutdown;
use crate::store::StoreError;
use crate::store::lock::{self, LockMode};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address cannot be bound: configuration (exit 2).
    #[error("EDGECRON_LISTEN: cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("{step}: {source}")]
    Start {
        step: &'static str,
        source: io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl ServeError {
    /// The error of a start-up step that failed on I/O.
    fn start(step: &'static str) -> impl FnOnce(io::Error) -> ServeError {
        move |source| ServeError::Start { step, source }
    }
}

/// How long the listener may take, once runs have ended, to deliver their responses.
const LAST_RESPONSES: Duration = Duration::from_secs(1);

pub fn run(process: &Process) -> Result<(), ServeError> {
    let (runner, shutdown) = (&process.runner, &process.shutdown);
    // Held while serving, so `edgecron restore` never replaces the store under it.
    let _served = lock::try_lock(&process.config.db_path, LockMode::Shared)
        .map_err(ServeError::start("locking the store"))?
        .ok_or_else(|| {
            ServeError::start("locking the store")(io::Error::other(
                "`edgecron restore` is replacing it",
            ))
        })?;
    let planned = scheduler::plan(&process.jobs, &process.config, crate::site::current());
    close_orphaned_runs(runner)?;
    crate::jobs::heal_capture(&process.store, &process.config, process.clock.as_ref())?;
    let listener = listen(process, &planned)?;
    let _signals = forward_signals(shutdown);
    let watcher = start_watcher(process, &planned)?;
    let scheduler = start_scheduler(process, planned)?;
    while !shutdown.wait(Duration::from_secs(3600)) {}
    stop(process, scheduler, watcher, &listener);
    Ok(())
}

fn close_orphaned_runs(runner: &Runner) -> Result<(), ServeError> {
    let closed = runner.close_orphaned_runs()?;
    if closed > 0 {
        log::warn!("closed {closed} runs left running by a process that died");
    }
    Ok(())
}

fn listen(process: &Process, planned: &[PlannedJob]) -> Result<http::Listener, ServeError> {
    let config = &process.config;
    let secrets = http::resolve_cron_secrets(config)
        .map_err(ServeError::start("preparing the generated secret"))?;
    let address = config.listen;
    let socket =
        TcpListener::bind(address).map_err(|source| ServeError::Listen { address, source })?;
    let address = socket
        .local_addr()
        .map_err(ServeError::start("reading the listen address"))?;
    let app = Arc::new(App {
        runner: Arc::clone(&process.runner),
        store: process.store.clone(),
        config: Arc::clone(&process.config),
        clock: Arc::clone(&process.clock),
        jobs: Arc::clone(&process.jobs),
        auth: Auth::new(secrets, config).map_err(ServeError::start("seeding session keys"))?,
        planned: planned.to_vec(),
        scrapes: std::sync::Mutex::new(None),
    });
    let listener = http::start(socket, app, Arc::clone(&process.shutdown))
        .map_err(ServeError::start("starting the HTTP listener"))?;
    log::info!(
        "listening on http://{address} (store {})",
        process.store.path().display()
    );
    Ok(listener)
}

fn start_watcher(process: &Process, planned: &[PlannedJob]) -> Result<JoinHandle<()>, ServeError> {
    let (scheduling, planned) = (process.scheduling(), planned.to_vec());
    let shutdown = Arc::clone(&process.shutdown);
    std::thread::Builder::new()
        .name("watcher".into())
        .spawn(move || scheduler::watch::watch(scheduling, planned, shutdown))
        .map_err(ServeError::start("starting the watcher"))
}

fn start_scheduler(
    process: &Process,
    planned: Vec<PlannedJob>,
) -> Result<JoinHandle<Vec<JoinHandle<()>>>, ServeError> {
    let (scheduling, shutdown) = (process.scheduling(), Arc::clone(&process.shutdown));
    std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || scheduler::run(scheduling, planned, shutdown))
        .map_err(ServeError::start("starting the scheduler"))
}

fn stop(
    process: &Process,
    scheduler: JoinHandle<Vec<JoinHandle<()>>>,
    watcher: JoinHandle<()>,
    listener: &http::Listener,
) {
    let runner = &process.runner;
    let grace = process.config.shutdown_grace;
    log::info!(
        "stopping: no new runs; waiting up to {}s for running jobs",
        grace.as_secs()
    );
    // The scheduler's run threads are detached: the runner's idle wait covers them.
    let _ = scheduler.join();
    let _ = watcher.join();
    if runner.wait_idle(grace) {
        listener.wait_idle(LAST_RESPONSES);
    } else {
        runner.abandon_active("interrupted: the shutdown grace period ran out");
    }
    log::info!("stopped");
}

/// Requests shutdown on SIGTERM or SIGINT, from a small thread of its own.
pub fn forward_signals(shutdown: &Arc<Shutdown>) -> Option<signal_hook::iterator::Handle> {
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(signals) => signals,
        Err(error) => {
            log::warn!("cannot catch SIGTERM/SIGINT ({error}); they will stop the process at once");
            return None;
        }
    };
    let handle = signals.handle();
    let shutdown = Arc::clone(shutdown);
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                log::info!("received signal {signal}; shutting down");
                shutdown.request();
            }
        });
    spawned.ok().map(|_| handle)
}
