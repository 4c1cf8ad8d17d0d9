//! edgecron: periodic data jobs for a multi-tenant SaaS backend, against a local SQLite store.

pub mod clock;
pub mod holder;
pub mod scheduler;
pub mod store;
