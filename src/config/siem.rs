//! `SIEM_*` configuration, validated at start-up: a named backend with a missing or malformed
//! endpoint, key or index stops `serve` and `run` (exit 2) instead of failing every 5 minutes.

use std::time::Duration;

use super::variables::{
    SIEM_API_KEY, SIEM_BACKEND, SIEM_ENDPOINT, SIEM_INDEX, SIEM_SOURCETYPE, SIEM_SPLUNK_ACK,
    SIEM_START, SIEM_TIMEOUT_SECS,
};
use super::{ConfigError, Environment, Secret};

/// The SIEM intakes edgecron can ship audit rows to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Splunk,
    Datadog,
    Elastic,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Splunk, Backend::Datadog, Backend::Elastic];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Splunk => "splunk",
            Backend::Datadog => "datadog",
            Backend::Elastic => "elastic",
        }
    }

    /// The intake's path, appended to `SIEM_ENDPOINT`.
    pub fn path(self) -> &'static str {
        match self {
            Backend::Splunk => "/services/collector/event",
            Backend::Datadog => "/api/v2/logs",
            Backend::Elastic => "/_bulk",
        }
    }
}

/// Where `siem-ship` delivers, or why it does nothing.
#[derive(Debug, Clone)]
pub enum Siem {
    /// No backend configured (or an unknown one); the job answers `skipped` with this reason.
    Off(String),
    On(SiemSettings),
}

#[derive(Debug, Clone)]
pub struct SiemSettings {
    pub backend: Backend,
    /// The intake's base URL, without a trailing slash.
    pub endpoint: String,
    pub api_key: Secret,
    /// `SIEM_INDEX`: Splunk's index (else the token's default) or Elastic's (else `edgecron-audit`).
    pub index: Option<String>,
    /// `SIEM_SOURCETYPE`: Splunk's sourcetype and Datadog's `ddsource`.
    pub sourcetype: Option<String>,
    /// `SIEM_TIMEOUT_SECS`: the longest one request to the intake may take, and the longest
    /// siem-ship waits for Splunk to acknowledge one.
    pub request_timeout: Duration,
    /// `SIEM_SPLUNK_ACK`: each HEC request goes on a channel, and its rows count as shipped
    /// only once the indexers acknowledge it.
    pub splunk_ack: bool,
    /// `SIEM_START`: where a SIEM with no progress yet begins.
    pub start: SiemStart,
}

/// Where the first run for a backend begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiemStart {
    /// Every audit row the store holds, then what comes after.
    Beginning,
    /// What comes after: the rows already in the store are taken as shipped, unsent (the
    /// system edgecron replaces shipped them already).
    Now,
}

impl SiemSettings {
    pub fn url(&self) -> String {
        format!("{}{}", self.endpoint, self.backend.path())
    }
}

pub const DEFAULT_ELASTIC_INDEX: &str = "edgecron-audit";

/// Reads the `SIEM_*` variables.
pub(super) fn parse(env: &Environment) -> Result<Siem, ConfigError> {
    let Some(name) = env.text(&SIEM_BACKEND) else {
        return Ok(Siem::Off("SIEM_BACKEND is not set".into()));
    };
    let Some(backend) = Backend::ALL
        .into_iter()
        .find(|backend| backend.name().eq_ignore_ascii_case(name))
    else {
        let known: Vec<&str> = Backend::ALL.iter().map(|backend| backend.name()).collect();
        let reason = format!(
            "SIEM_BACKEND {name:?} is not one of {}; audit rows are not shipped",
            known.join(", ")
        );
        return Ok(Siem::Off(reason));
    };
    let endpoint = parse_endpoint(backend, env.text(&SIEM_ENDPOINT))?;
    let api_key = env.text(&SIEM_API_KEY).ok_or_else(|| {
        ConfigError(format!(
            "SIEM_API_KEY: required with SIEM_BACKEND={}",
            backend.name()
        ))
    })?;
    if !api_key.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(ConfigError(
            "SIEM_API_KEY: must be printable ASCII without spaces (it is sent as a header)".into(),
        ));
    }
    let index = env.text(&SIEM_INDEX).map(str::to_string);
    if let Some(index) = &index {
        check_index(backend, index)?;
    }
    let sourcetype = env.text(&SIEM_SOURCETYPE).map(str::to_string);
    if let Some(sourcetype) = &sourcetype
        && sourcetype.chars().any(char::is_control)
    {
        return Err(ConfigError(
            "SIEM_SOURCETYPE: must not contain control characters".into(),
        ));
    }
    let request_timeout = env.number(&SIEM_TIMEOUT_SECS)?;
    let splunk_ack = env.flag(&SIEM_SPLUNK_ACK)?;
    if splunk_ack && backend != Backend::Splunk {
        return Err(ConfigError(format!(
            "SIEM_SPLUNK_ACK: Splunk's indexer acknowledgement, not for SIEM_BACKEND={}; unset it",
            backend.name()
        )));
    }
    let start = env.one_of(&SIEM_START, [SiemStart::Beginning, SiemStart::Now])?;
    Ok(Siem::On(SiemSettings {
        start,
        backend,
        endpoint,
        api_key: Secret::new(api_key.to_string()),
        index,
        sourcetype,
        request_timeout: Duration::from_secs(request_timeout),
        splunk_ack,
    }))
}

fn parse_endpoint(backend: Backend, value: Option<&str>) -> Result<String, ConfigError> {
    let name = backend.name();
    let text = value.ok_or_else(|| {
        ConfigError(format!(
            "SIEM_ENDPOINT: required with SIEM_BACKEND={name} (the intake's base URL)"
        ))
    })?;
    let malformed = |why: &str| ConfigError(format!("SIEM_ENDPOINT: {text:?} {why}"));
    let url = url::Url::parse(text).map_err(|_| malformed("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(malformed("is not an http:// or https:// URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(malformed("must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: the value holds a password.
        return Err(ConfigError(
            "SIEM_ENDPOINT: must not carry credentials (user:password@); SIEM_API_KEY holds the key".into(),
        ));
    }
    let endpoint = text.trim_end_matches('/');
    if endpoint.ends_with(backend.path()) {
        return Err(malformed(&format!(
            "should be the base URL: edgecron appends {}",
            backend.path()
        )));
    }
    Ok(endpoint.to_string())
}

/// Index names as each backend accepts them, so a typo fails at start-up, not at the intake.
fn check_index(backend: Backend, index: &str) -> Result<(), ConfigError> {
    let refuse = |rule: &str| {
        Err(ConfigError(format!(
            "SIEM_INDEX: {index:?} is not a valid {} index name ({rule})",
            backend.name()
        )))
    };
    match backend {
        Backend::Splunk => {
            let allowed = index.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-".contains(&byte)
            });
            if !allowed || index.starts_with(['_', '-']) {
                return refuse(
                    "lowercase letters, digits, '_' and '-', not starting with '_' or '-'",
                );
            }
        }
        Backend::Elastic => {
            let forbidden = index
                .chars()
                .any(|c| c.is_uppercase() || c.is_control() || " \\/*?\"<>|,#:".contains(c));
            if forbidden
                || index.starts_with(['-', '_', '+'])
                || index == "."
                || index == ".."
                || index.len() > 255
            {
                return refuse(
                    "lowercase, no spaces or \\/*?\"<>|,#:, not starting with -, _ or +",
                );
            }
        }
        Backend::Datadog => {
            return Err(ConfigError(
                "SIEM_INDEX: not used by datadog (Datadog routes logs to indexes by its own filters); unset it".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_vars(vars: &[(&str, &str)]) -> Result<Siem, ConfigError> {
        let vars = vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()));
        parse(&Environment::new(vars))
    }

    #[test]
    fn unset_or_unknown_backend_is_off_with_a_reason() {
        let Siem::Off(reason) = parse_vars(&[]).unwrap() else {
            panic!("expected off");
        };
        assert_eq!(reason, "SIEM_BACKEND is not set");
        let Siem::Off(reason) = parse_vars(&[("SIEM_BACKEND", "graylog")]).unwrap() else {
            panic!("expected off");
        };
        assert!(reason.contains("\"graylog\""), "{reason}");
    }

    #[test]
    fn a_complete_backend_is_on() {
        let Siem::On(settings) = parse_vars(&[
            ("SIEM_BACKEND", "Elastic"),
            ("SIEM_ENDPOINT", "https://es.example:9200/"),
            ("SIEM_API_KEY", "aWQ6a2V5"),
        ])
        .unwrap() else {
            panic!("expected on");
        };
        assert_eq!(settings.backend, Backend::Elastic);
        assert_eq!(settings.url(), "https://es.example:9200/_bulk");
        assert_eq!(settings.request_timeout, Duration::from_secs(30));
    }

    #[test]
    fn bad_combinations_name_the_variable() {
        let base = [
            ("SIEM_BACKEND", "splunk"),
            ("SIEM_ENDPOINT", "https://splunk.example:8088"),
            ("SIEM_API_KEY", "token"),
        ];
        let with = |name: &'static str, value: &'static str| {
            let mut vars: Vec<(&str, &str)> =
                base.iter().copied().filter(|(n, _)| *n != name).collect();
            vars.push((name, value));
            vars
        };
        let without = |name: &'static str| -> Vec<(&str, &str)> {
            base.iter().copied().filter(|(n, _)| *n != name).collect()
        };
        for (vars, variable) in [
            (without("SIEM_ENDPOINT"), "SIEM_ENDPOINT"),
            (without("SIEM_API_KEY"), "SIEM_API_KEY"),
            (
                with("SIEM_ENDPOINT", "splunk.example:8088"),
                "SIEM_ENDPOINT",
            ),
            (
                with("SIEM_ENDPOINT", "ftp://splunk.example"),
                "SIEM_ENDPOINT",
            ),
            (
                with("SIEM_ENDPOINT", "https://u:p@splunk.example"),
                "SIEM_ENDPOINT",
            ),
            (
                with("SIEM_ENDPOINT", "https://splunk.example?x=1"),
                "SIEM_ENDPOINT",
            ),
            (
                with(
                    "SIEM_ENDPOINT",
                    "https://splunk.example/services/collector/event",
                ),
                "SIEM_ENDPOINT",
            ),
            (with("SIEM_API_KEY", "two words"), "SIEM_API_KEY"),
            (with("SIEM_INDEX", "Main"), "SIEM_INDEX"),
            (with("SIEM_INDEX", "_internal"), "SIEM_INDEX"),
            (with("SIEM_SOURCETYPE", "a\nb"), "SIEM_SOURCETYPE"),
            (with("SIEM_TIMEOUT_SECS", "0"), "SIEM_TIMEOUT_SECS"),
            (with("SIEM_SPLUNK_ACK", "maybe"), "SIEM_SPLUNK_ACK"),
        ] {
            let error = parse_vars(&vars).unwrap_err().to_string();
            assert!(error.starts_with(variable), "{vars:?}: {error}");
        }
        let elastic = [
            ("SIEM_BACKEND", "elastic"),
            ("SIEM_ENDPOINT", "http://127.0.0.1:9200"),
            ("SIEM_API_KEY", "k"),
        ];
        for index in ["Audit", "a b", "-audit", "a:b", ".."] {
            let mut vars = elastic.to_vec();
            vars.push(("SIEM_INDEX", index));
            assert!(parse_vars(&vars).is_err(), "{index}");
        }
        let mut datadog = elastic.to_vec();
        datadog[0] = ("SIEM_BACKEND", "datadog");
        datadog.push(("SIEM_INDEX", "main"));
        assert!(
            parse_vars(&datadog)
                .unwrap_err()
                .to_string()
                .starts_with("SIEM_INDEX")
        );
    }
}
