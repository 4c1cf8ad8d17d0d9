//! edgecron: periodic data jobs for a multi-tenant SaaS backend, against a local SQLite store.
//! Modules by layer, lowest first: each uses its own layer and lower ones (`tests/tidy.rs`).

// 0. Leaves.
mod clock; // Clock, and the store's time text
mod cron; // crontab expressions and next-fire math
mod durable; // fsync of files and directories
mod holder; // this process as a lease holder
mod io_error; // an I/O error with what was being done
mod logging; // text or JSON log lines
mod shutdown; // the shutdown request every loop waits on
mod webhook; // the alert webhook POST

// 1. Configuration.
mod config; // every variable, declared once and read before anything runs

// 2. The store.
mod store; // every table but the jobs' own

// 3. Domain.
mod alert; // the one alert path
mod export; // exactly-once partitioned files and their uploads
mod heartbeat; // a running run's lease refresh
mod ping; // healthchecks.io-style pings
mod siem; // SIEM intakes and their wire formats
mod site; // this store's site in a fleet

// 4. Jobs.
mod jobs; // trait Job and one file per job

// 5. The runner.
mod runner; // the one path every run takes

// 6. Above the runner.
mod check; // edgecron check
mod scheduler; // the scheduler loop and the watcher
mod status; // the read model the edges show

// 7. Edges.
pub mod cli; // the subcommands
mod demo; // sample data for every job
mod http; // the listener and its routes
mod process; // one process's parts, built once
mod restore; // a backup put back
mod serve; // the serve lifecycle
