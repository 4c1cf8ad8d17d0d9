//! edgecron: periodic data jobs for a multi-tenant SaaS backend, against a local SQLite store.

mod alert;
mod check;
pub mod cli;
mod clock;
mod config;
mod cron;
mod demo;
mod durable;
mod export;
mod heartbeat;
mod holder;
mod http;
mod io_error;
mod jobs;
pub mod logging;
mod ping;
mod process;
mod restore;
mod runner;
mod scheduler;
mod serve;
mod shutdown;
mod siem;
mod site;
mod status;
mod store;
mod webhook;
