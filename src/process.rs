//! One edgecron process's parts, built once from the configuration and the store and handed to
//! each piece that needs them (the composition root): the runner, which runs every job, and
//! the store, configuration, clock, jobs and alerts that the scheduler, the watcher, the
//! listener and the read model are given explicitly.

use std::sync::Arc;

use crate::alert::Alerts;
use crate::clock::Clock;
use crate::config::Config;
use crate::jobs::Registry;
use crate::runner::Runner;
use crate::scheduler::Scheduling;
use crate::shutdown::Shutdown;
use crate::status::Sources;
use crate::store::Store;

pub struct Process {
    pub runner: Arc<Runner>,
    pub store: Store,
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    pub jobs: Arc<Registry>,
    pub alerts: Alerts,
    pub shutdown: Arc<Shutdown>,
}

impl Process {
    pub fn new(config: Arc<Config>, store: Store, clock: Arc<dyn Clock>) -> Process {
        let jobs = Arc::new(Registry::all());
        let alerts = Alerts::new(store.clone(), &config, Arc::clone(&clock));
        let shutdown = Arc::new(Shutdown::default());
        let runner = Arc::new(Runner::new(
            Arc::clone(&jobs),
            store.clone(),
            Arc::clone(&config),
            Arc::clone(&clock),
            Arc::clone(&shutdown),
            alerts.clone(),
        ));
        Process {
            runner,
            store,
            config,
            clock,
            jobs,
            alerts,
            shutdown,
        }
    }

    /// What the read model reads.
    pub fn sources(&self) -> Sources<'_> {
        Sources {
            store: &self.store,
            jobs: &self.jobs,
            config: &self.config,
            clock: self.clock.as_ref(),
        }
    }

    /// What the scheduler loop and the watcher work with.
    pub fn scheduling(&self) -> Scheduling {
        Scheduling {
            runner: Arc::clone(&self.runner),
            store: self.store.clone(),
            config: Arc::clone(&self.config),
            clock: Arc::clone(&self.clock),
            alerts: self.alerts.clone(),
        }
    }
}
