//! The built-in scheduler: sleeps until the next job is due, then asks the runner to run it.

pub mod schedule;
