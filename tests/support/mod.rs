//! Shared helpers for the integration tests, one file per concern: the environment and the
//! real binary (`env`), SQL against its store (`store`), a real server and a raw HTTP client
//! for it (`server`), export files on disk (`exports`), and fakes of what the binary talks to:
//! S3 (`moto`), SIEM intakes (`intake`) and alert webhooks (`webhook`); outside tools a test
//! drives (`tools`); disks that lose power (`powercut`, with `lazyfs.py`); `raw` sends bytes no
//! well-behaved client would, `endless` answers as no well-behaved peer would.

mod endless;
mod env;
mod exports;
pub mod intake;
mod moto;
pub mod powercut;
pub mod raw;
mod server;
mod store;
mod tools;
pub mod webhook;

pub use endless::Endless;
pub use env::{Env, SECRET, signal};
pub use exports::{
    ExportedRow, assert_exported_exactly_once, drain_exports, export_files, exported_rows,
};
pub use moto::{BUCKET, Moto};
pub use server::{Server, free_port, http, read_reply, wait_until};
pub use tools::{available, python_has, python_json};
