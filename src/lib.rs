//! edgecron: periodic data jobs for a multi-tenant SaaS backend, against a local SQLite store.

pub mod alert;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod export;
pub mod heartbeat;
pub mod holder;
pub mod http;
pub mod io_error;
pub mod jobs;
pub mod logging;
pub mod runner;
pub mod scheduler;
pub mod shutdown;
pub mod siem;
pub mod status;
pub mod store;
pub mod webhook;
