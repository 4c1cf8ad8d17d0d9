//! The `site` row: this store's site id and the machine it was recorded on.

use rusqlite::OptionalExtension;

use super::{Store, StoreError};

/// A store's site as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRecord {
    pub site_id: String,
    /// `None`: the host had no machine id to bind the store to.
    pub machine_id: Option<String>,
}

/// The site recorded in this store, if any yet.
pub fn recorded_site(store: &Store) -> Result<Option<SiteRecord>, StoreError> {
    Ok(store
        .conn()?
        .query_row(
            "SELECT site_id, machine_id FROM site WHERE singleton = 1",
            [],
            |row| {
                Ok(SiteRecord {
                    site_id: row.get(0)?,
                    machine_id: row.get(1)?,
                })
            },
        )
        .optional()?)
}

/// Records `site` unless one is recorded already (two processes starting at once agree);
/// answers the site the store has.
pub fn record_first_site(
    store: &Store,
    site: &SiteRecord,
    now: &str,
) -> Result<SiteRecord, StoreError> {
    store.conn()?.execute(
        "INSERT INTO site (singleton, site_id, machine_id, recorded_at) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (singleton) DO NOTHING",
        (&site.site_id, &site.machine_id, now),
    )?;
    Ok(recorded_site(store)?.unwrap_or_else(|| site.clone()))
}

/// Makes `site` the store's, replacing what was recorded (`edgecron site adopt`).
pub fn replace_site(store: &Store, site: &SiteRecord, now: &str) -> Result<(), StoreError> {
    store.conn()?.execute(
        "INSERT INTO site (singleton, site_id, machine_id, recorded_at) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (singleton) DO UPDATE SET site_id = excluded.site_id,
             machine_id = excluded.machine_id, recorded_at = excluded.recorded_at",
        (&site.site_id, &site.machine_id, now),
    )?;
    Ok(())
}
