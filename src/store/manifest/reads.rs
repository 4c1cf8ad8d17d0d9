//! The export's reads of `interaction_history`: one step of the first walk in primary-key
//! order, and the rows the capture queued.

use std::ops::ControlFlow;

use rusqlite::{Connection, Row};

use crate::store::capture::{self, Source, WalkStep};

/// Hands each row of one step of the first walk over `interaction_history`, in primary-key
/// order, to `visit`, until it breaks. Columns: tenant_id, id, customer_id, channel, outcome,
/// payload, created_at.
pub fn walk_rows<B, E: From<rusqlite::Error>>(
    conn: &Connection,
    step: &WalkStep,
    mut visit: impl FnMut(&Row<'_>) -> Result<ControlFlow<B>, E>,
) -> Result<ControlFlow<B>, E> {
    let sql = format!(
        "SELECT h.tenant_id, h.id, h.customer_id, h.channel, h.outcome, h.payload, h.created_at
           FROM interaction_history h WHERE {} ORDER BY h.id",
        step.condition(Source::Interactions, "h.id")
    );
    let params = step.params();
    let mut statement = conn.prepare(&sql)?;
    let mut rows = statement.query(capture::bind(&params).as_slice())?;
    while let Some(row) = rows.next()? {
        if let ControlFlow::Break(value) = visit(row)? {
            return Ok(ControlFlow::Break(value));
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// Hands each entry of the interaction capture queue, in commit order, to `visit`, until it
/// breaks. Columns: seq, the row's current tenant_id, id, customer_id, channel, outcome,
/// payload, created_at (all NULL for a row deleted since it was captured), then `superseded`
/// (the same id was captured again later: that entry exports the row) and `unwalked` (the row
/// is in the rest of the walk step `unwalked`, which reads it unless it stays queued).
pub fn captured_rows<E: From<rusqlite::Error>>(
    conn: &Connection,
    unwalked: Option<&WalkStep>,
    mut visit: impl FnMut(&Row<'_>) -> Result<ControlFlow<()>, E>,
) -> Result<(), E> {
    let params = unwalked.map(WalkStep::params).unwrap_or_default();
    let held = unwalked.map_or_else(
        || "0".to_string(),
        |step| step.holds_captured("c.seq", "c.item_id"),
    );
    // Duplicates are rare (INSERT OR REPLACE, delete and re-insert): the grouping keeps only
    // ids captured more than once, and the queue is scanned in `seq` order beside it.
    let mut statement = conn.prepare(&format!(
        "SELECT c.seq, h.tenant_id, h.id, h.customer_id, h.channel, h.outcome, h.payload, h.created_at,
                d.last IS NOT NULL AND c.seq < d.last, {held}
           FROM interaction_capture c
           LEFT JOIN (SELECT item_id, MAX(seq) AS last FROM interaction_capture
                       GROUP BY item_id HAVING COUNT(*) > 1) d ON d.item_id = c.item_id
           LEFT JOIN interaction_history h ON h.id = c.item_id
          ORDER BY c.seq"
    ))?;
    let mut rows = statement.query(capture::bind(&params).as_slice())?;
    while let Some(row) = rows.next()? {
        if visit(row)?.is_break() {
            break;
        }
    }
    Ok(())
}
