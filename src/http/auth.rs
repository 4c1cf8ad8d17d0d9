//! Who may trigger a job: shared secrets, compared in constant time, several at once so a
//! secret can be rotated without downtime; and the generated secret `serve` falls back to.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tiny_http::Request;

use crate::config::{Config, Secret};

/// The secrets a route accepts.
pub struct Auth {
    cron_secrets: Vec<Secret>,
    maintenance_secret: Option<Secret>,
    cron_token: Option<Secret>,
}

/// Which secrets, beyond `CRON_SECRET`, a route also accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realm {
    Cron,
    /// `/api/admin/maintenance`: `MAINTENANCE_CRON_SECRET` too.
    Maintenance,
    /// The legacy `/api/cron/tick`: `CRON_TOKEN` and the `X-Cron-Token` header too.
    LegacyTick,
}

impl Auth {
    pub fn new(cron_secrets: Vec<Secret>, config: &Config) -> Auth {
        Auth {
            cron_secrets,
            maintenance_secret: config.maintenance_secret.clone(),
            cron_token: config.cron_token.clone(),
        }
    }

    pub fn allows(&self, request: &Request, realm: Realm) -> bool {
        let mut accepted: Vec<&Secret> = self.cron_secrets.iter().collect();
        match realm {
            Realm::Cron => {}
            Realm::Maintenance => accepted.extend(self.maintenance_secret.as_ref()),
            Realm::LegacyTick => accepted.extend(self.cron_token.as_ref()),
        }
        let mut presented = Vec::new();
        for header in request.headers() {
            let name = header.field.as_str().as_str();
            let value = header.value.as_str().trim();
            if name.eq_ignore_ascii_case("authorization") {
                if let Some(token) = strip_prefix_ignore_case(value, "bearer ") {
                    presented.push(token.trim());
                }
            } else if name.eq_ignore_ascii_case("x-cron-secret")
                || (realm == Realm::LegacyTick && name.eq_ignore_ascii_case("x-cron-token"))
            {
                presented.push(value);
            }
        }
        presented
            .iter()
            .any(|candidate| matches_any(candidate, &accepted))
    }
}

/// The status page's cookie.
pub const SESSION_COOKIE: &str = "edgecron_session";

impl Auth {
    /// The session value for a presented cron secret, if it is one. The cookie holds this
    /// derived value, never the secret, so it opens the status page and no trigger route.
    pub fn session_for(&self, presented: &str) -> Option<String> {
        let accepted: Vec<&Secret> = self.cron_secrets.iter().collect();
        matches_any(presented, &accepted).then(|| session_value(presented))
    }

    /// Whether the request may see the status page: a trigger secret in a header, or the
    /// session cookie.
    pub fn allows_page(&self, request: &Request) -> bool {
        if self.allows(request, Realm::Cron) {
            return true;
        }
        let sessions: Vec<Secret> = self
            .cron_secrets
            .iter()
            .map(|secret| Secret::new(session_value(secret.expose())))
            .collect();
        let accepted: Vec<&Secret> = sessions.iter().collect();
        request
            .headers()
            .iter()
            .filter(|header| header.field.equiv("cookie"))
            .flat_map(|header| header.value.as_str().split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == SESSION_COOKIE)
            .any(|(_, value)| matches_any(value, &accepted))
    }
}

fn session_value(secret: &str) -> String {
    let digest = Sha256::digest(format!("edgecron status page\0{secret}").as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// Compares against every accepted secret, without stopping at the first match. Digests are
/// compared, in constant time, so neither the content nor the length of a secret leaks
/// through timing.
pub fn matches_any(candidate: &str, accepted: &[&Secret]) -> bool {
    let candidate = Sha256::digest(candidate.as_bytes());
    accepted.iter().fold(false, |found, secret| {
        let expected = Sha256::digest(secret.expose().as_bytes());
        found | constant_time_eq::constant_time_eq_32(candidate.as_ref(), expected.as_ref())
    })
}

/// The secrets `serve` accepts: `CRON_SECRET`'s, or else one generated into
/// `$EDGECRON_DATA_DIR/cron-secret` (mode 0600) and reused on later starts.
pub fn resolve_cron_secrets(config: &Config) -> std::io::Result<Vec<Secret>> {
    if !config.cron_secrets.is_empty() {
        return Ok(config.cron_secrets.clone());
    }
    let path = config.data_dir.join("cron-secret");
    // Only a missing (or empty) file is generated: an unreadable one is the operator's to fix,
    // never silently replaced.
    let secret = match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            restrict_to_owner(&path)?;
            Secret::new(text.trim().to_string())
        }
        Ok(_) => generate_secret_file(&path)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => generate_secret_file(&path)?,
        Err(error) => {
            return Err(std::io::Error::new(
                error.kind(),
                format!("reading {}: {error}", path.display()),
            ));
        }
    };
    log::warn!(
        "CRON_SECRET is not set: trigger routes accept the secret in {} (the file, not the log, holds it)",
        absolute(&path).display()
    );
    Ok(vec![secret])
}

fn generate_secret_file(path: &Path) -> std::io::Result<Secret> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| std::io::Error::other(error.to_string()))?;
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    restrict_to_owner(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    restrict_to_owner(path)?;
    Ok(Secret::new(secret))
}

fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_accepted_secret_matches_and_nothing_else_does() {
        let new = Secret::new("new-secret".into());
        let old = Secret::new("old-secret".into());
        let accepted = [&new, &old];
        assert!(matches_any("new-secret", &accepted));
        assert!(matches_any("old-secret", &accepted));
        for wrong in [
            "",
            "new-secre",
            "new-secret ",
            "NEW-SECRET",
            "old-secret-and-more",
        ] {
            assert!(!matches_any(wrong, &accepted), "{wrong:?}");
        }
        assert!(!matches_any("anything", &[]));
    }

    #[test]
    fn generated_secret_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let vars = [(
            "EDGECRON_DATA_DIR".to_string(),
            dir.path().display().to_string(),
        )];
        let config = Config::from_vars(vars, &[]).unwrap();
        let first = resolve_cron_secrets(&config).unwrap();
        let second = resolve_cron_secrets(&config).unwrap();
        assert_eq!(first, second);
        assert_eq!(first[0].expose().len(), 64);
        let mode = std::fs::metadata(dir.path().join("cron-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
