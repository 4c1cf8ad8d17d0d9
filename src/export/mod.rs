//! Export files: where they live (Hive partitions under the data dir) and which names are safe.

pub mod partition;
