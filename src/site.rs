//! This store's site (SPEC section 9): the id a fleet tells its hosts apart by, recorded in the
//! store with the machine it belongs to. A store found on another machine (copied from an
//! image or a backup, or moved), or started with another `EDGECRON_SITE_ID`, does no work
//! until `edgecron site adopt` makes it this host's own.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::store::site::{self, SiteRecord};
use crate::store::{Store, StoreError};

/// Where the host's machine id is read (systemd's, else D-Bus's copy of it).
const MACHINE_ID_FILES: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];

/// The site this process works for, once bound.
static CURRENT: OnceLock<String> = OnceLock::new();

/// The site this process works for, once [`bind`] has run.
pub fn current() -> Option<&'static str> {
    CURRENT.get().map(String::as_str)
}

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(
        "this store belongs to site {site} on machine {recorded_machine}, not to this machine ({this_machine}): it was copied or moved here; run `edgecron site adopt` to make it this host's own site"
    )]
    Elsewhere {
        site: String,
        recorded_machine: String,
        this_machine: String,
    },
    #[error(
        "this store belongs to site {recorded}, but EDGECRON_SITE_ID is {configured}: run `edgecron site adopt` to make it site {configured}, or unset EDGECRON_SITE_ID"
    )]
    Renamed {
        recorded: String,
        configured: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store's site for work on this host: recorded now if the store has none (as
/// `EDGECRON_SITE_ID`, else derived from this machine), refused if it belongs elsewhere.
pub fn bind(store: &Store, configured: Option<&str>, now: &str) -> Result<String, SiteError> {
    let machine = machine_id();
    // Read first: once recorded, binding writes nothing (a run never waits for the write lock
    // on its account).
    let recorded = match site::recorded_site(store)? {
        Some(recorded) => recorded,
        None => {
            let wanted = SiteRecord {
                site_id: configured.map_or_else(|| derived_id(machine.as_deref()), str::to_string),
                machine_id: machine.clone(),
            };
            site::record_first_site(store, &wanted, now)?
        }
    };
    if let (Some(recorded_machine), Some(this_machine)) = (&recorded.machine_id, &machine)
        && recorded_machine != this_machine
    {
        return Err(SiteError::Elsewhere {
            site: recorded.site_id,
            recorded_machine: recorded_machine.clone(),
            this_machine: this_machine.clone(),
        });
    }
    if let Some(configured) = configured
        && configured != recorded.site_id
    {
        return Err(SiteError::Renamed {
            recorded: recorded.site_id,
            configured: configured.to_string(),
        });
    }
    let _ = CURRENT.set(recorded.site_id.clone());
    Ok(recorded.site_id)
}

/// The site the store records, without binding it (`edgecron site`).
pub fn recorded(store: &Store) -> Result<Option<String>, StoreError> {
    Ok(site::recorded_site(store)?.map(|site| site.site_id))
}

/// Makes the store this host's own site: `EDGECRON_SITE_ID`, else an id derived from this
/// machine (a new random one if that is the id the store had: a clone of the same image).
pub fn adopt(store: &Store, configured: Option<&str>, now: &str) -> Result<String, SiteError> {
    let machine = machine_id();
    let previous = recorded(store)?;
    let site_id = match configured {
        Some(configured) => configured.to_string(),
        None => {
            let derived = derived_id(machine.as_deref());
            if previous.as_deref() == Some(derived.as_str()) {
                derived_id(None)
            } else {
                derived
            }
        }
    };
    site::replace_site(
        store,
        &SiteRecord {
            site_id: site_id.clone(),
            machine_id: machine,
        },
        now,
    )?;
    Ok(site_id)
}

fn machine_id() -> Option<String> {
    MACHINE_ID_FILES.iter().find_map(|path| {
        let id = std::fs::read_to_string(path).ok()?;
        let id = id.trim();
        (!id.is_empty()).then(|| id.to_string())
    })
}

/// `site-` and 12 hex digits: a hash of the machine id (never the id itself), else random.
fn derived_id(machine: Option<&str>) -> String {
    let digest = match machine {
        Some(machine) => Sha256::digest(format!("edgecron-site:{machine}").as_bytes()).to_vec(),
        None => {
            let mut random = [0u8; 6];
            // Without randomness the id is still valid, only less unique.
            let _ = getrandom::fill(&mut random);
            random.to_vec()
        }
    };
    let hex: String = digest
        .iter()
        .take(6)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("site-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;

    #[test]
    fn a_derived_id_is_stable_per_machine_and_a_valid_site_id() {
        let id = derived_id(Some("abc"));
        assert_eq!(id, derived_id(Some("abc")));
        assert_ne!(id, derived_id(Some("abd")));
        assert_eq!(id.len(), 17);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }

    #[test]
    fn another_configured_id_is_refused_until_adopted() {
        let (_dir, store) = temp_store();
        let first = bind(&store, Some("edge-1"), "t").unwrap();
        assert_eq!(first, "edge-1");
        assert_eq!(bind(&store, None, "t").unwrap(), "edge-1");
        assert!(matches!(
            bind(&store, Some("edge-2"), "t"),
            Err(SiteError::Renamed { .. })
        ));
        assert_eq!(adopt(&store, Some("edge-2"), "t").unwrap(), "edge-2");
        assert_eq!(bind(&store, Some("edge-2"), "t").unwrap(), "edge-2");
    }

    #[test]
    fn a_store_recorded_on_another_machine_is_refused_until_adopted() {
        let (_dir, store) = temp_store();
        site::replace_site(
            &store,
            &SiteRecord {
                site_id: "site-elsewhere".into(),
                machine_id: Some("another-machine".into()),
            },
            "t",
        )
        .unwrap();
        if machine_id().is_none() {
            return;
        }
        let refused = bind(&store, None, "t").unwrap_err();
        assert!(
            refused.to_string().contains("edgecron site adopt"),
            "{refused}"
        );
        let adopted = adopt(&store, None, "t").unwrap();
        assert_ne!(adopted, "site-elsewhere");
        assert_eq!(bind(&store, None, "t").unwrap(), adopted);
    }
}
