//! How configuration reads the environment: a variable's declaration (what unset means,
//! what it accepts), one reading for each kind of value (one dialect of flags, ranges named in
//! the problem), and the environment itself, trimmed, with an empty value as unset.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ConfigError;
use Accepts::{Address, Cron, Flag, Fraction, Number, OneOf, Path, SiteId, Text, Url, Zone};
use Unset::{Derived, Is, Nothing};

/// One variable. A per-job variable is named with `<JOB>` (`EDGECRON_GRACE_<JOB>`).
#[derive(Debug, Serialize)]
pub struct Variable {
    pub name: &'static str,
    pub unset: Unset,
    pub accepts: Accepts,
    pub about: &'static str,
}

/// What an unset (or empty) variable means.
#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum Unset {
    /// This value, as an operator would write it.
    Is(&'static str),
    /// Nothing: the feature it configures is off, or another variable stands in.
    Nothing,
    /// A value worked out at start-up, described.
    Derived(&'static str),
}

/// The values a variable takes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Accepts {
    Text,
    Path,
    Address,
    Url,
    Zone,
    Cron,
    SiteId,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`), one dialect for every flag.
    Flag,
    /// A whole number in `min..=max` (bounded so no later arithmetic can overflow).
    Number {
        min: u64,
        max: u64,
    },
    Fraction {
        min: f64,
        max: f64,
    },
    /// One of these names, the first the default.
    OneOf {
        values: &'static [&'static str],
    },
}

impl Variable {
    /// The prefix of a per-job variable (`EDGECRON_GRACE_`), or `None`.
    pub fn job_prefix(&self) -> Option<&'static str> {
        self.name.strip_suffix("<JOB>")
    }

    /// Whether `name` is this variable, or one job's of a per-job variable.
    pub fn names(&self, name: &str) -> bool {
        match self.job_prefix() {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.name,
        }
    }

    /// The value of `name` (this variable, or one job's), or what unset means.
    pub fn number(&self, name: &str, text: Option<&str>) -> Result<u64, ConfigError> {
        let Number { min, max } = self.accepts else {
            return Err(self.misdeclared());
        };
        in_range(name, self.given_or_unset(text)?, min, max)
    }

    pub fn fraction(&self, name: &str, text: Option<&str>) -> Result<f64, ConfigError> {
        let Fraction { min, max } = self.accepts else {
            return Err(self.misdeclared());
        };
        in_range(name, self.given_or_unset(text)?, min, max)
    }

    pub fn flag(&self, name: &str, text: Option<&str>) -> Result<bool, ConfigError> {
        let text = self.given_or_unset(text)?;
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(ConfigError(format!(
                "{name}: expected true or false, got {text:?}"
            ))),
        }
    }

    /// The value among `values`, which stand for this variable's names in their order.
    pub fn one_of<T: Copy, const N: usize>(
        &self,
        name: &str,
        text: Option<&str>,
        values: [T; N],
    ) -> Result<T, ConfigError> {
        let OneOf { values: names } = self.accepts else {
            return Err(self.misdeclared());
        };
        let text = self.given_or_unset(text)?;
        let position = names
            .iter()
            .position(|known| known.eq_ignore_ascii_case(text));
        match position.and_then(|index| values.get(index)) {
            Some(value) => Ok(*value),
            None => Err(ConfigError(format!(
                "{name}: expected {}, got {text:?}",
                either(names)
            ))),
        }
    }

    pub fn unset_value(&self) -> Option<&'static str> {
        match self.unset {
            Is(value) => Some(value),
            Nothing | Derived(_) => None,
        }
    }

    /// The text given, else the declared value for unset.
    fn given_or_unset<'a>(&self, text: Option<&'a str>) -> Result<&'a str, ConfigError> {
        text.or(self.unset_value())
            .ok_or_else(|| self.misdeclared())
    }

    /// A declaration that does not fit how it is read: caught by the tests over every variable.
    fn misdeclared(&self) -> ConfigError {
        ConfigError(format!(
            "{}: declared as {:?}, read otherwise",
            self.name, self.accepts
        ))
    }
}

impl Accepts {
    /// The values in words, for `edgecron check --variables`.
    pub fn describe(&self) -> String {
        match self {
            Text => "text".into(),
            Path => "a path".into(),
            Address => "host:port".into(),
            Url => "an http(s) URL".into(),
            Zone => "an IANA zone".into(),
            Cron => "a cron expression".into(),
            SiteId => "1-40 of a-z 0-9 -".into(),
            Flag => "true or false".into(),
            Number { min, max } => format!("{min} to {max}"),
            Fraction { min, max } => format!("{min} to {max}"),
            OneOf { values } => either(values),
        }
    }
}

/// A number in `min..=max`; the problem names the variable and the range.
fn in_range<T>(name: &str, text: &str, min: T, max: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    match text.parse::<T>() {
        Ok(number) if number >= min && number <= max => Ok(number),
        _ => Err(ConfigError(format!(
            "{name}: expected a number from {min} to {max}, got {text:?}"
        ))),
    }
}

/// `a, b or c`.
fn either(names: &[&str]) -> String {
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The environment as configuration reads it: values trimmed, an empty one as unset, each
/// variable read as its declaration says.
pub(super) struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    pub(super) fn new(vars: impl IntoIterator<Item = (String, String)>) -> Environment {
        Environment {
            vars: vars.into_iter().collect(),
        }
    }

    /// The variable's value; `None` when it is unset or empty.
    pub(super) fn text(&self, variable: &Variable) -> Option<&str> {
        self.named(variable.name)
    }

    /// The value, else the declared one for unset.
    pub(super) fn text_or_default(&self, variable: &Variable) -> &str {
        self.text(variable)
            .or(variable.unset_value())
            .unwrap_or_default()
    }

    pub(super) fn named(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    }

    pub(super) fn number(&self, variable: &Variable) -> Result<u64, ConfigError> {
        variable.number(variable.name, self.text(variable))
    }

    pub(super) fn flag(&self, variable: &Variable) -> Result<bool, ConfigError> {
        variable.flag(variable.name, self.text(variable))
    }

    pub(super) fn one_of<T: Copy, const N: usize>(
        &self,
        variable: &Variable,
        values: [T; N],
    ) -> Result<T, ConfigError> {
        variable.one_of(variable.name, self.text(variable), values)
    }

    /// Every variable set, by name.
    pub(super) fn names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars
            .iter()
            .map(|(name, value)| (name.as_str(), value.trim()))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::variables::{
        CRON_ENABLED, EDGECRON_GRACE_JOB, EXPORT_FORMAT, SIEM_SPLUNK_ACK,
    };

    #[test]
    fn one_dialect_of_flags_and_ranges_named_in_the_problem() {
        assert!(!CRON_ENABLED.flag("CRON_ENABLED", Some("Off")).unwrap());
        assert!(
            SIEM_SPLUNK_ACK
                .flag("SIEM_SPLUNK_ACK", Some("yes"))
                .unwrap()
        );
        let problem = CRON_ENABLED
            .flag("CRON_ENABLED", Some("maybe"))
            .unwrap_err();
        assert_eq!(
            problem.0,
            "CRON_ENABLED: expected true or false, got \"maybe\""
        );
        let problem = EDGECRON_GRACE_JOB
            .number("EDGECRON_GRACE_CLEANUP", Some("0"))
            .unwrap_err();
        assert_eq!(
            problem.0,
            "EDGECRON_GRACE_CLEANUP: expected a number from 1 to 604800, got \"0\""
        );
        let problem = EXPORT_FORMAT
            .one_of("EXPORT_FORMAT", Some("csv"), [1, 2])
            .unwrap_err();
        assert_eq!(
            problem.0,
            "EXPORT_FORMAT: expected ndjson or parquet, got \"csv\""
        );
    }
}
