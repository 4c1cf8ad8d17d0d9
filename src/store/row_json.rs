//! A row as a JSON object, every column kept: how archives and SIEM events carry rows whose
//! columns the application may have added to.

use rusqlite::Row;
use rusqlite::types::ValueRef;
use serde_json::{Map, Value, json};

/// The row's columns from `first_column` on, named by `names` (one per column, in order).
pub fn row_object(
    row: &Row<'_>,
    names: &[String],
    first_column: usize,
) -> rusqlite::Result<Map<String, Value>> {
    let mut object = Map::new();
    for (offset, name) in names.iter().enumerate() {
        let value = match row.get_ref(first_column + offset)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(number) => json!(number),
            ValueRef::Real(number) => json!(number),
            ValueRef::Text(text) | ValueRef::Blob(text) => json!(String::from_utf8_lossy(text)),
        };
        object.insert(name.clone(), value);
    }
    Ok(object)
}
