//! Integration tests: the real binary and server against temp data dirs on loopback.

mod support;

mod calendar;
mod capture;
mod capture_gap;
mod cli;
mod dropin;
mod durability;
mod erasure;
mod export;
mod fleet;
mod http;
mod lake;
mod listener;
mod occurrences;
mod operate;
mod powercut;
mod progress;
mod restore;
mod rollups;
mod row_input;
mod s3;
mod scheduler;
mod siem;
mod site;
mod switchover;
