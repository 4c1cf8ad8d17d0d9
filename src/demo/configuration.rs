//! Configuration rows and the desired configuration `gitops-drift-check` compares them with.

use std::path::Path;

use rusqlite::Transaction;

use super::{DemoError, write_file};

/// Configuration rows, and a desired configuration under `gitops/` in the data dir that
/// matches one, differs from one and adds one (`GITOPS_DIR=<data dir>/gitops`).
pub(super) fn insert_configuration(
    tx: &Transaction<'_>,
    data_dir: &Path,
) -> Result<u64, DemoError> {
    tx.execute(
        r#"INSERT INTO configuration (kind, name, body) VALUES
             ('feature_flags', 'demo-beta-exports', '{"enabled": true, "tenants": ["acme", "globex"]}'),
             ('feature_flags', 'demo-dark-mode', '{"enabled": false}'),
             ('limits', 'demo-api', '{"requests_per_minute": 600}')"#,
        [],
    )?;
    let desired = [
        (
            "feature_flags/demo-beta-exports.json",
            r#"{"tenants": ["acme", "globex"], "enabled": true}"#,
        ),
        ("feature_flags/demo-dark-mode.json", r#"{"enabled": true}"#),
        ("limits/demo-api.json", r#"{"requests_per_minute": 600}"#),
        ("limits/demo-exports.json", r#"{"per_day": 20}"#),
    ];
    for (relative, body) in desired {
        write_file(&data_dir.join("gitops").join(relative), body.as_bytes())?;
    }
    Ok(3)
}
