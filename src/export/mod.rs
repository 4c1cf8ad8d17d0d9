//! Export files: where they live (Hive partitions under the data dir) and which names are safe.

pub mod batch;
pub mod exported_ids;
pub mod metrics;
pub mod ndjson;
pub mod partition;
pub mod storage;
