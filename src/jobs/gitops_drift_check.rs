//! `gitops-drift-check`: compare the desired configuration under `GITOPS_DIR` (one JSON object
//! per file, `kind/name.json`) with the store's `configuration` rows, by a hash of each
//! object's canonical form (keys sorted, no whitespace), so formatting and key order never
//! count as drift.
//!
//! An object is `drifted` (in both, different), `missing` (desired, not in the store), `extra`
//! (in the store under a kind the directory manages, not desired) or `invalid` (a file that is
//! not one JSON object). Each check records a report with its items and one audit entry.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::TransactionBehavior;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Job, JobCtx, JobError, JobOutput, Skipped};
use crate::clock::to_store_text;

pub struct GitopsDriftCheck;

/// A desired object larger than this is reported invalid rather than read into memory.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Drifted,
    Missing,
    Extra,
    Invalid,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Drifted => "drifted",
            State::Missing => "missing",
            State::Extra => "extra",
            State::Invalid => "invalid",
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    checked: usize,
    drifted: usize,
    missing: usize,
    extra: usize,
    invalid: usize,
    /// The first 200.
    items: Vec<Listed<'a>>,
    report_id: Option<i64>,
    dry_run: bool,
}

#[derive(Serialize)]
struct Listed<'a> {
    kind: &'a str,
    name: &'a str,
    state: &'static str,
    detail: Option<&'a str>,
}

impl Listed<'_> {
    fn of(item: &Item) -> Listed<'_> {
        Listed {
            kind: &item.kind,
            name: &item.name,
            state: item.state.as_str(),
            detail: item.detail.as_deref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Item {
    kind: String,
    name: String,
    state: State,
    desired_hash: Option<String>,
    actual_hash: Option<String>,
    detail: Option<String>,
}

/// What the directory asks for.
#[derive(Default)]
struct Desired {
    /// Kinds the directory manages (its subdirectories, even empty ones).
    kinds: Vec<String>,
    objects: BTreeMap<(String, String), String>,
    invalid: Vec<Item>,
}

impl Job for GitopsDriftCheck {
    fn name(&self) -> &'static str {
        "gitops-drift-check"
    }

    fn default_schedule(&self) -> &'static str {
        "0 5 * * *"
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let Some(dir) = &ctx.config.gitops_dir else {
            let skipped = Skipped {
                skipped: "GITOPS_DIR is not set",
            };
            return JobOutput::new(&skipped, 0, 0);
        };
        let desired = read_desired(dir)?;
        let actual = read_actual(ctx, &desired.kinds)?;
        let mut items = desired.invalid.clone();
        items.extend(compare(&desired.objects, &actual));
        let count = |state: State| items.iter().filter(|item| item.state == state).count();
        let (drifted, missing, extra, invalid) = (
            count(State::Drifted),
            count(State::Missing),
            count(State::Extra),
            count(State::Invalid),
        );
        let checked = desired.objects.len() + invalid;
        let report_id = if ctx.params.dry_run {
            None
        } else {
            Some(record(
                ctx,
                &items,
                [checked, drifted, missing, extra, invalid],
            )?)
        };
        if drifted + missing + extra > 0 {
            log::warn!(
                "gitops-drift-check: {drifted} drifted, {missing} missing, {extra} extra of {checked} desired objects"
            );
        }
        let report = Report {
            checked,
            drifted,
            missing,
            extra,
            invalid,
            items: items.iter().take(200).map(Listed::of).collect(),
            report_id,
            dry_run: ctx.params.dry_run,
        };
        JobOutput::new(&report, invalid as u64, checked as u64)
    }
}

/// The SHA-256 of a value's canonical JSON (`serde_json` maps keep keys sorted).
fn canonical_hash(value: &Value) -> String {
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte))
}

fn read_desired(dir: &Path) -> Result<Desired, JobError> {
    let mut desired = Desired::default();
    let entries = std::fs::read_dir(dir).map_err(JobError::io(format!(
        "reading GITOPS_DIR {}",
        dir.display()
    )))?;
    let mut kinds: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|kind| is_safe_name(kind))
        .collect();
    kinds.sort();
    for kind in &kinds {
        let kind_dir = dir.join(kind);
        let files = std::fs::read_dir(&kind_dir)
            .map_err(JobError::io(format!("reading {}", kind_dir.display())))?;
        for file in files.filter_map(Result::ok) {
            let path = file.path();
            let (Some(name), Some("json")) = (
                path.file_stem().and_then(|stem| stem.to_str()),
                path.extension().and_then(|ext| ext.to_str()),
            ) else {
                continue;
            };
            if !path.is_file() {
                continue;
            }
            let invalid = |detail: String| Item {
                kind: kind.clone(),
                name: name.to_string(),
                state: State::Invalid,
                desired_hash: None,
                actual_hash: None,
                detail: Some(detail),
            };
            if !is_safe_name(name) {
                desired.invalid.push(invalid(
                    "the name is not made of letters, digits, '.', '_' and '-'".into(),
                ));
                continue;
            }
            let size = std::fs::metadata(&path).map_or(0, |meta| meta.len());
            if size > MAX_FILE_BYTES {
                desired.invalid.push(invalid(format!(
                    "{size} bytes; a configuration object is at most {MAX_FILE_BYTES}"
                )));
                continue;
            }
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(error) => {
                    desired
                        .invalid
                        .push(invalid(format!("unreadable: {error}")));
                    continue;
                }
            };
            match serde_json::from_str::<Value>(&text) {
                Ok(value @ Value::Object(_)) => {
                    desired
                        .objects
                        .insert((kind.clone(), name.to_string()), canonical_hash(&value));
                }
                Ok(_) => desired.invalid.push(invalid("not a JSON object".into())),
                Err(error) => desired.invalid.push(invalid(format!("not JSON: {error}"))),
            }
        }
    }
    desired.kinds = kinds;
    Ok(desired)
}

/// The store's objects of the managed kinds, hashed the same way (a body that is not JSON
/// hashes as its text, so it always drifts from a valid desired object).
fn read_actual(
    ctx: &JobCtx<'_>,
    kinds: &[String],
) -> Result<BTreeMap<(String, String), String>, JobError> {
    let conn = ctx.store.conn()?;
    let mut statement = conn.prepare(
        "SELECT kind, name, body FROM configuration
          WHERE kind IN (SELECT value FROM json_each(?1))",
    )?;
    let kinds = serde_json::to_string(kinds).unwrap_or_default();
    let rows = statement.query_map([kinds], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut actual = BTreeMap::new();
    for row in rows {
        let (kind, name, body) = row?;
        let hash = serde_json::from_str::<Value>(&body).map_or_else(
            |_| canonical_hash(&Value::String(body)),
            |value| canonical_hash(&value),
        );
        actual.insert((kind, name), hash);
    }
    Ok(actual)
}

fn compare(
    desired: &BTreeMap<(String, String), String>,
    actual: &BTreeMap<(String, String), String>,
) -> Vec<Item> {
    let item = |(kind, name): &(String, String),
                state,
                desired: Option<&String>,
                actual: Option<&String>| Item {
        kind: kind.clone(),
        name: name.clone(),
        state,
        desired_hash: desired.cloned(),
        actual_hash: actual.cloned(),
        detail: None,
    };
    let mut items = Vec::new();
    for (key, want) in desired {
        match actual.get(key) {
            None => items.push(item(key, State::Missing, Some(want), None)),
            Some(have) if have != want => {
                items.push(item(key, State::Drifted, Some(want), Some(have)));
            }
            Some(_) => {}
        }
    }
    for (key, have) in actual {
        if !desired.contains_key(key) {
            items.push(item(key, State::Extra, None, Some(have)));
        }
    }
    items
}

/// The report, its items and one audit entry, in one transaction; answers the report id.
fn record(ctx: &JobCtx<'_>, items: &[Item], counts: [usize; 5]) -> Result<i64, JobError> {
    let [checked, drifted, missing, extra, invalid] = counts.map(|count| count as i64);
    let now = to_store_text(ctx.now());
    let mut conn = ctx.store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO gitops_drift_reports (run_id, checked, drifted, missing, extra, invalid, checked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        (ctx.run_id, checked, drifted, missing, extra, invalid, &now),
    )?;
    let report_id = tx.last_insert_rowid();
    {
        let mut insert = tx.prepare(
            "INSERT INTO gitops_drift_items (report_id, kind, name, state, desired_hash, actual_hash, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for item in items {
            insert.execute((
                report_id,
                &item.kind,
                &item.name,
                item.state.as_str(),
                &item.desired_hash,
                &item.actual_hash,
                &item.detail,
            ))?;
        }
    }
    let details = json!({"reportId": report_id, "checked": checked, "drifted": drifted,
                         "missing": missing, "extra": extra, "invalid": invalid});
    tx.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, target, details, created_at)
         VALUES ('', 'edgecron', 'gitops.drift_check', 'configuration', ?1, ?2)",
        (details.to_string(), &now),
    )?;
    tx.commit()?;
    Ok(report_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::{TimeZone, Utc};

    #[test]
    fn unset_dir_is_skipped() {
        let harness = Harness::new(Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap());
        let output = GitopsDriftCheck.run(&harness.ctx()).unwrap();
        assert_eq!(output.body["skipped"], "GITOPS_DIR is not set");
    }

    #[test]
    fn drift_missing_extra_and_invalid_are_reported_and_recorded() {
        let mut harness = Harness::new(Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap());
        harness.write_file(
            "gitops/flags/beta.json",
            br#"{"on": true, "rollout": {"b": 2, "a": 1}}"#,
        );
        harness.write_file("gitops/flags/dark.json", br#"{"on": false}"#);
        harness.write_file("gitops/flags/new.json", br#"{"on": true}"#);
        harness.write_file("gitops/flags/broken.json", b"{not json");
        harness.write_file("gitops/flags/notes.txt", b"ignored");
        harness.write_file("gitops/flags/huge.json", &vec![b' '; 2 * 1024 * 1024]);
        harness.write_file("gitops/flags/bad name.json", b"{}");
        harness.write_file("gitops/limits/api.json", br#"{"rps": 100}"#);
        harness.exec(
            r#"INSERT INTO configuration (kind, name, body) VALUES
                 ('flags', 'beta', '{"rollout":{"a":1,"b":2},"on":true}'),
                 ('flags', 'dark', '{"on": true}'),
                 ('flags', 'stale', '{"on": true}'),
                 ('limits', 'api', '{"rps":100}'),
                 ('unmanaged', 'x', '{}');"#,
        );
        harness.config.gitops_dir = Some(harness.config.data_dir.join("gitops"));
        let output = GitopsDriftCheck.run(&harness.ctx()).unwrap();
        let body = &output.body;
        assert_eq!(
            (
                body["checked"].as_u64(),
                body["drifted"].as_u64(),
                body["missing"].as_u64(),
                body["extra"].as_u64(),
                body["invalid"].as_u64()
            ),
            (Some(7), Some(1), Some(1), Some(1), Some(3))
        );
        assert_eq!(
            harness.strings("SELECT state || ' ' || kind || '/' || name FROM gitops_drift_items ORDER BY state, name"),
            [
                "drifted flags/dark",
                "extra flags/stale",
                "invalid flags/bad name",
                "invalid flags/broken",
                "invalid flags/huge",
                "missing flags/new"
            ]
        );
        assert_eq!(
            harness.query::<String>(
                "SELECT details FROM audit_log WHERE action = 'gitops.drift_check'"
            ),
            r#"{"checked":7,"drifted":1,"extra":1,"invalid":3,"missing":1,"reportId":1}"#
        );
    }
}
