//! A data subject's access request (SPEC section 8): every row of customer C of tenant T in
//! the tables erasure reaches, and every exported line of theirs, as one JSON document. Read
//! only: the export files of the days their rows are on (the manifest says which), each read
//! from disk, or from the bucket when its local copy was removed after the upload.

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde_json::{Map, Value, json};

use super::JobError;
use super::dsar_erase::{DataSubject, TABLES, exported_lines, subject_days};
use crate::clock::to_store_text;
use crate::config::Config;
use crate::export::storage::Storage;
use crate::store::export_rewrite::files_of_days;
use crate::store::{Store, row_object};

/// `{tenantId, customerId, generatedAt, tables:{name:[rows]}, exports:[{file, lines}]}`.
pub fn dsar_access(
    store: &Store,
    config: &Config,
    subject: &DataSubject,
    now: DateTime<Utc>,
) -> Result<Value, JobError> {
    let mut tables = Map::new();
    {
        let conn = store.conn()?;
        for (table, _) in TABLES {
            let mut statement = conn.prepare(&format!(
                "SELECT * FROM {table} WHERE tenant_id = ?1 AND customer_id = ?2"
            ))?;
            let names: Vec<String> = statement
                .column_names()
                .into_iter()
                .map(str::to_string)
                .collect();
            let rows = statement
                .query_map(params![subject.tenant_id, subject.customer_id], |row| {
                    row_object(row, &names, 0).map(Value::Object)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            tables.insert(table.to_string(), Value::Array(rows));
        }
    }
    let storage = config
        .s3
        .as_ref()
        .map(Storage::new)
        .transpose()
        .map_err(|error| JobError::Failed(error.to_string()))?;
    let mut exports = Vec::new();
    let days = subject_days(store, subject)?;
    for file in files_of_days(store, &subject.tenant_id, &days)? {
        let lines = exported_lines(&config.data_dir, storage.as_ref(), &file, subject)?;
        if !lines.is_empty() {
            exports.push(json!({"file": file.path, "lines": lines}));
        }
    }
    Ok(json!({
        "tenantId": subject.tenant_id,
        "customerId": subject.customer_id,
        "generatedAt": to_store_text(now),
        "tables": tables,
        "exports": exports,
    }))
}
