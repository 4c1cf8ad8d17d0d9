//! What waits to be exported, per tenant, and the rows the last runs could not export.

use std::collections::HashMap;

use rusqlite::{TransactionBehavior, params};

use crate::store::capture::{self, Source};
use crate::store::{Store, StoreError};

/// Rows the tenants' last runs could not export as they are.
pub fn invalid_rows(store: &Store) -> Result<u64, StoreError> {
    let count: i64 = store.conn()?.query_row(
        "SELECT COALESCE(SUM(invalid_rows), 0) FROM export_checkpoints",
        [],
        |row| row.get(0),
    )?;
    Ok(count as u64)
}

/// Records what each tenant has waiting as a run ends, for `/metrics`; answers it.
pub fn record_backlog_by_tenant(
    store: &Store,
    now_text: &str,
) -> Result<HashMap<String, u64>, StoreError> {
    let waiting = waiting_by_tenant(store)?;
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute("DELETE FROM export_backlog", [])?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO export_backlog (tenant_id, rows, updated_at) VALUES (?1, ?2, ?3)",
        )?;
        for (tenant_id, rows) in &waiting {
            insert.execute(params![tenant_id, *rows as i64, now_text])?;
        }
    }
    tx.commit()?;
    Ok(waiting)
}

/// What each tenant had waiting when the last export run ended.
pub fn backlog_by_tenant(store: &Store) -> Result<Vec<(String, u64)>, StoreError> {
    let conn = store.conn()?;
    let mut statement =
        conn.prepare("SELECT tenant_id, rows FROM export_backlog ORDER BY tenant_id")?;
    let rows = statement
        .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Rows each tenant has waiting (its current tenant), captured or still to be walked.
pub fn waiting_by_tenant(store: &Store) -> Result<HashMap<String, u64>, StoreError> {
    let conn = store.conn()?;
    let mut waiting: HashMap<String, u64> = HashMap::new();
    let mut add = |statement: &mut rusqlite::Statement<'_>,
                   params: &[(&str, &dyn rusqlite::ToSql)]|
     -> Result<(), StoreError> {
        let mut rows = statement.query(params)?;
        while let Some(row) = rows.next()? {
            let (tenant, count): (Option<String>, i64) = (row.get(0).ok(), row.get(1)?);
            if let Some(tenant) = tenant {
                *waiting.entry(tenant).or_default() += count as u64;
            }
        }
        Ok(())
    };
    add(
        &mut conn.prepare(
            "SELECT h.tenant_id, COUNT(DISTINCT c.item_id) FROM interaction_capture c
              JOIN interaction_history h ON h.id = c.item_id GROUP BY h.tenant_id",
        )?,
        &[],
    )?;
    if let Some(step) = capture::state(store, Source::Interactions)?.unwalked() {
        let params = step.params();
        add(
            &mut conn.prepare(&format!(
                "SELECT tenant_id, COUNT(*) FROM interaction_history h WHERE {} GROUP BY tenant_id",
                step.condition(Source::Interactions, "h.id")
            ))?,
            &capture::bind(&params),
        )?;
    }
    Ok(waiting)
}
