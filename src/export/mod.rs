//! Export files: where they live (Hive partitions under the data dir) and which names are safe.

pub mod batch;
pub mod exported_ids;
pub mod format;
pub mod partition;
pub mod reconcile;
pub mod reported;
pub mod rewrite;
pub mod row;
pub mod storage;
