//! Who may trigger a job: shared secrets, compared in constant time, several at once so a
//! secret can be rotated without downtime; and the generated secret `serve` falls back to.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::wire::Request;
use crate::config::{Config, Secret};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The secrets a route accepts.
pub struct Auth {
    cron_secrets: Vec<Secret>,
    maintenance_secret: Option<Secret>,
    cron_token: Option<Secret>,
    /// Signs status-page sessions; random per process, so a restart signs everyone out.
    session_key: [u8; 32],
    /// Authentications refused since start.
    refusals: AtomicU64,
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
    pub fn new(cron_secrets: Vec<Secret>, config: &Config) -> std::io::Result<Auth> {
        let mut session_key = [0u8; 32];
        getrandom::fill(&mut session_key)
            .map_err(|error| std::io::Error::other(error.to_string()))?;
        Ok(Auth {
            cron_secrets,
            maintenance_secret: config.maintenance_secret.clone(),
            cron_token: config.cron_token.clone(),
            session_key,
            refusals: AtomicU64::new(0),
        })
    }

    /// Whether the request presents exactly one accepted secret. Several secret headers are
    /// refused, never tried one by one: a client must not test a list of guesses at once.
    pub fn verify(&self, request: &Request, realm: Realm) -> Result<(), Refused> {
        let mut accepted: Vec<&Secret> = self.cron_secrets.iter().collect();
        let mut names = vec!["authorization", "x-cron-secret"];
        match realm {
            Realm::Cron => {}
            Realm::Maintenance => accepted.extend(self.maintenance_secret.as_ref()),
            Realm::LegacyTick => {
                accepted.extend(self.cron_token.as_ref());
                names.push("x-cron-token");
            }
        }
        let presented: Vec<(&str, &str)> = names
            .iter()
            .flat_map(|name| {
                request
                    .headers(name)
                    .map(move |value| (*name, value.trim()))
            })
            .collect();
        let (name, value) = match presented.as_slice() {
            [] => return Err(Refused::Missing),
            [one] => *one,
            _ => return Err(Refused::Several),
        };
        let candidate = match name {
            "authorization" => strip_prefix_ignore_case(value, "bearer ").map(str::trim),
            _ => Some(value),
        };
        match candidate {
            Some(candidate) if matches_any(candidate, &accepted) => Ok(()),
            _ => Err(Refused::Wrong),
        }
    }

    pub fn allows(&self, request: &Request, realm: Realm) -> bool {
        self.verify(request, realm).is_ok()
    }

    /// Counts a refused authentication (for `/metrics`) and logs it with the client's address,
    /// never the value it presented.
    pub fn note_refusal(&self, request: &Request, refused: Refused) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
        let client = request
            .peer
            .map_or_else(|| "an unknown client".to_string(), |peer| peer.to_string());
        log::warn!(
            "http: {} {} from {client} refused: {refused}",
            request.method,
            request.path
        );
    }

    /// Authentications refused since the process started.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no secret presented")]
    Missing,
    #[error("a wrong secret")]
    Wrong,
    #[error("more than one secret header")]
    Several,
}

impl Refused {
    /// 400 for several secrets (a malformed request), else 401.
    pub fn status(self) -> u16 {
        match self {
            Refused::Several => 400,
            Refused::Missing | Refused::Wrong => 401,
        }
    }
}

/// The status page's cookie.
pub const SESSION_COOKIE: &str = "edgecron_session";
/// How long a status-page sign-in lasts.
pub const SESSION_SECONDS: i64 = 12 * 3600;

type HmacSha256 = Hmac<Sha256>;

impl Auth {
    /// A session for a presented cron secret, if it is one: `{expiry}.{mac}`, where the MAC
    /// (under this process's random key) covers the expiry and the secret. The cookie never
    /// holds the secret, proves nothing offline, dies with a restart, its expiry or the
    /// secret's rotation, and opens the status page only.
    pub fn session_for(&self, presented: &str, now: DateTime<Utc>) -> Option<String> {
        let accepted: Vec<&Secret> = self.cron_secrets.iter().collect();
        if !matches_any(presented, &accepted) {
            return None;
        }
        let expiry = now.timestamp() + SESSION_SECONDS;
        Some(format!("{expiry}.{}", self.session_mac(expiry, presented)))
    }

    /// Whether the request may see the status page: a trigger secret in a header, or a
    /// session cookie that has not expired.
    pub fn allows_page(&self, request: &Request, now: DateTime<Utc>) -> bool {
        if self.allows(request, Realm::Cron) {
            return true;
        }
        request
            .headers("cookie")
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == SESSION_COOKIE)
            .any(|(_, value)| self.session_is_valid(value, now))
    }

    fn session_is_valid(&self, value: &str, now: DateTime<Utc>) -> bool {
        let Some((expiry_text, _)) = value.split_once('.') else {
            return false;
        };
        let Ok(expiry) = expiry_text.parse::<i64>() else {
            return false;
        };
        if expiry <= now.timestamp() {
            return false;
        }
        let sessions: Vec<Secret> = self
            .cron_secrets
            .iter()
            .map(|secret| {
                Secret::new(format!(
                    "{expiry}.{}",
                    self.session_mac(expiry, secret.expose())
                ))
            })
            .collect();
        let accepted: Vec<&Secret> = sessions.iter().collect();
        matches_any(value, &accepted)
    }

    fn session_mac(&self, expiry: i64, secret: &str) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.session_key)
            .expect("HMAC takes a key of any length");
        mac.update(expiry.to_string().as_bytes());
        mac.update(b"\0");
        mac.update(secret.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
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
    let path = config.data_dir.join(crate::config::layout::SECRET);
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
    fn a_secret_counts_in_either_header_any_case_and_the_tick_token_only_on_the_tick() {
        let vars = [("CRON_TOKEN".to_string(), "tick-token".to_string())];
        let config = Config::from_vars(vars, &[]).unwrap();
        let auth = Auth::new(vec![Secret::new("s3cret".into())], &config).unwrap();
        let allows = |headers: &[(&str, &str)], realm| {
            auth.allows(&Request::for_test("GET", "/", headers), realm)
        };
        assert!(allows(&[("Authorization", "Bearer s3cret")], Realm::Cron));
        assert!(allows(&[("AUTHORIZATION", "bearer  s3cret ")], Realm::Cron));
        assert!(allows(&[("x-cron-secret", "s3cret")], Realm::Cron));
        // Regression: one request could carry 99 candidates, any match passing.
        let several = |headers: &[(&str, &str)]| {
            auth.verify(&Request::for_test("GET", "/", headers), Realm::Cron)
        };
        assert_eq!(
            several(&[
                ("Authorization", "Bearer wrong"),
                ("Authorization", "Bearer s3cret")
            ]),
            Err(Refused::Several)
        );
        assert_eq!(
            several(&[
                ("Authorization", "Bearer s3cret"),
                ("X-Cron-Secret", "s3cret")
            ]),
            Err(Refused::Several)
        );
        assert_eq!(
            several(&[("Authorization", "Bearer no")]),
            Err(Refused::Wrong)
        );
        assert_eq!(several(&[]), Err(Refused::Missing));
        assert!(!allows(&[("Authorization", "Basic s3cret")], Realm::Cron));
        assert!(!allows(&[("X-Cron-Token", "tick-token")], Realm::Cron));
        assert!(allows(&[("X-Cron-Token", "tick-token")], Realm::LegacyTick));
        assert!(allows(
            &[("Authorization", "Bearer tick-token")],
            Realm::LegacyTick
        ));
        assert!(!allows(&[], Realm::Cron));
    }

    #[test]
    fn sessions_expire_cannot_be_forged_and_die_with_their_secret() {
        use chrono::TimeZone;
        let config = Config::from_vars(Vec::<(String, String)>::new(), &[]).unwrap();
        let auth = Auth::new(vec![Secret::new("s3cret".into())], &config).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
        assert!(auth.session_for("wrong", now).is_none());
        let session = auth.session_for("s3cret", now).unwrap();
        assert!(!session.contains("s3cret"));
        assert!(auth.session_is_valid(&session, now));
        assert!(!auth.session_is_valid(&session, now + chrono::Duration::seconds(SESSION_SECONDS)));
        let (_, mac) = session.split_once('.').unwrap();
        let extended = format!("{}.{mac}", now.timestamp() + 10 * SESSION_SECONDS);
        assert!(
            !auth.session_is_valid(&extended, now),
            "the expiry is signed"
        );
        let rotated = Auth::new(vec![Secret::new("other".into())], &config).unwrap();
        assert!(!rotated.session_is_valid(&session, now));
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
