//! Hive partition paths for export files, and the check that a tenant id is safe in a path.

use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant id {id:?} is not safe as a path component: {reason}")]
pub struct UnsafeTenantId {
    pub id: String,
    pub reason: &'static str,
}

const MAX_COMPONENT_BYTES: usize = 200;

/// A tenant id checked safe to use as one directory name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantDir<'a>(&'a str);

impl<'a> TenantDir<'a> {
    pub fn new(id: &'a str) -> Result<TenantDir<'a>, UnsafeTenantId> {
        let refuse = |reason| {
            Err(UnsafeTenantId {
                id: id.to_string(),
                reason,
            })
        };
        if id.is_empty() {
            return refuse("empty");
        }
        if id.len() > MAX_COMPONENT_BYTES {
            return refuse("too long");
        }
        if id.contains("..") {
            return refuse("contains '..'");
        }
        if id == "." {
            return refuse("is '.'");
        }
        if id.contains(['/', '\\']) {
            return refuse("contains a path separator");
        }
        if id.chars().any(char::is_control) {
            return refuse("contains NUL or a control character");
        }
        Ok(TenantDir(id))
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// `exports/{tenant}/interaction_history`, relative to the data dir.
pub fn tenant_root(tenant: TenantDir<'_>) -> PathBuf {
    Path::new(crate::config::layout::EXPORTS)
        .join(tenant.0)
        .join("interaction_history")
}

/// `exports/{tenant}/interaction_history/site={site}/year=YYYY/month=MM/day=DD`, relative to
/// the data dir: the site is a partition column, so a fleet's sites never write the same key.
/// (Files written before sites were partitions stay at `…/interaction_history/year=…`.)
pub fn partition_dir(tenant: TenantDir<'_>, site: &str, day: NaiveDate) -> PathBuf {
    tenant_root(tenant)
        .join(format!("site={site}"))
        .join(day_dirs(day))
}

/// Where a day's files went before the site was a partition (batches of that time only).
pub fn unsited_partition_dir(tenant: TenantDir<'_>, day: NaiveDate) -> PathBuf {
    tenant_root(tenant).join(day_dirs(day))
}

fn day_dirs(day: NaiveDate) -> String {
    format!(
        "year={:04}/month={:02}/day={:02}",
        day.year(),
        day.month(),
        day.day()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_ids_are_safe() {
        for id in ["acme", "tenant-42", "ACME_Corp.eu", "café", "a b"] {
            assert!(TenantDir::new(id).is_ok(), "{id:?}");
        }
    }

    #[test]
    fn ids_that_could_escape_or_confuse_a_path_are_refused() {
        let long = "x".repeat(201);
        for id in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "a\\b",
            "nul\0byte",
            "new\nline",
            "tab\t",
            "a..b",
            &long,
        ] {
            assert!(TenantDir::new(id).is_err(), "{id:?} must be refused");
        }
    }

    #[test]
    fn partition_paths_are_hive_style() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 9).unwrap();
        let path = partition_dir(TenantDir::new("acme").unwrap(), "edge-1", day);
        assert_eq!(
            path,
            Path::new("exports/acme/interaction_history/site=edge-1/year=2026/month=03/day=09")
        );
    }
}
