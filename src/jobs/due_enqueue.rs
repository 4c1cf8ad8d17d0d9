//! Enqueue each due row of a table that carries its own cron schedule, exactly once.
//!
//! Shared by `flow-scheduler-tick` (flows) and `scheduled-retrains` (models). A row is due
//! when its `next_*` time has passed. Claiming it moves `next_*` forward with a
//! compare-and-set on the old value, in the same transaction as the outbox insert, and the
//! outbox's unique `dedupe_key` (table, row, scheduled time) backs that up: two ticks racing
//! on one row enqueue it once. Missed periods are not enqueued one by one; the next time is
//! planned from now.

use chrono::{DateTime, Utc};
use rusqlite::TransactionBehavior;
use serde::Serialize;
use serde_json::json;

use super::{JobCtx, JobError, JobOutput};
use crate::clock::to_store_text;
use crate::config::parse_zone;
use crate::cron::Schedule;

/// Which table, columns and outbox topic a due-enqueue job works on. Names are the job's own
/// SQL identifiers, never input.
pub struct DueTable {
    pub table: &'static str,
    pub schedule_column: &'static str,
    pub next_column: &'static str,
    pub topic: &'static str,
    /// The payload key naming the row (`flowId`, `modelId`).
    pub id_key: &'static str,
}

/// The result of a run.
#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct DueOutcome {
    enqueued: u64,
    /// Rows seen for the first time, whose first run time was planned.
    planned: u64,
    /// Rows whose schedule or time zone cannot be read.
    errors: Vec<RowError>,
    finished: bool,
    dry_run: bool,
}

#[derive(Serialize)]
struct RowError {
    id: String,
    error: String,
}

const BATCH: i64 = 500;

struct DueRow {
    id: String,
    tenant_id: String,
    schedule: String,
    timezone: String,
    next: Option<String>,
}

impl DueTable {
    /// Enqueues what is due and answers the job's result: `{enqueued, planned, errors}`.
    pub fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let outcome = self.enqueue_due(ctx)?;
        JobOutput::new(&outcome, outcome.errors.len() as u64, outcome.enqueued)
    }

    fn enqueue_due(&self, ctx: &JobCtx<'_>) -> Result<DueOutcome, JobError> {
        let now = ctx.now();
        let now_text = to_store_text(now);
        let mut outcome = DueOutcome {
            finished: true,
            dry_run: ctx.params.dry_run,
            ..DueOutcome::default()
        };
        if ctx.params.dry_run {
            let due: i64 = ctx.store.conn()?.query_row(
                &format!(
                    "SELECT COUNT(*) FROM {table} WHERE enabled = 1 AND {schedule} IS NOT NULL AND {next} <= ?1",
                    table = self.table,
                    schedule = self.schedule_column,
                    next = self.next_column
                ),
                [&now_text],
                |row| row.get(0),
            )?;
            outcome.enqueued = due as u64;
            return Ok(outcome);
        }

        // Rows never planned, then rows due; each batch is read afresh, so a row fixed or
        // claimed meanwhile is not handled twice.
        let mut failed_ids: Vec<String> = Vec::new();
        for unplanned in [true, false] {
            loop {
                if ctx.should_stop() {
                    outcome.finished = false;
                    return Ok(outcome);
                }
                let rows = self.select(ctx, unplanned, &now_text, &failed_ids)?;
                let batch_len = rows.len();
                for row in rows {
                    match self.next_time(&row, now) {
                        Ok(next) => self.claim(ctx, &row, next, &now_text, &mut outcome)?,
                        Err(error) => {
                            self.record_error(ctx, &row.id, &error)?;
                            failed_ids.push(row.id.clone());
                            outcome.errors.push(RowError { id: row.id, error });
                        }
                    }
                }
                if (batch_len as i64) < BATCH {
                    break;
                }
            }
        }
        Ok(outcome)
    }

    fn select(
        &self,
        ctx: &JobCtx<'_>,
        unplanned: bool,
        now_text: &str,
        failed_ids: &[String],
    ) -> Result<Vec<DueRow>, JobError> {
        let which = if unplanned {
            format!("{} IS NULL", self.next_column)
        } else {
            format!("{} <= ?1", self.next_column)
        };
        let conn = ctx.store.conn()?;
        let mut statement = conn.prepare(&format!(
            "SELECT id, tenant_id, {schedule}, timezone, {next} FROM {table}
             WHERE enabled = 1 AND {schedule} IS NOT NULL AND {which}
               AND id NOT IN (SELECT value FROM json_each(?2))
             ORDER BY {next}, id LIMIT {BATCH}",
            table = self.table,
            schedule = self.schedule_column,
            next = self.next_column,
        ))?;
        let failed = serde_json::to_string(failed_ids).unwrap_or_else(|_| "[]".to_string());
        let rows = statement
            .query_map((now_text, failed), |row| {
                Ok(DueRow {
                    id: row.get(0)?,
                    tenant_id: row.get(1)?,
                    schedule: row.get(2)?,
                    timezone: row.get(3)?,
                    next: row.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn next_time(&self, row: &DueRow, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        let zone = parse_zone("timezone", &row.timezone).map_err(|error| error.to_string())?;
        let schedule = Schedule::parse(&row.schedule, zone).map_err(|error| error.to_string())?;
        schedule
            .next_after(now)
            .ok_or_else(|| format!("cron expression {:?} never fires", row.schedule))
    }

    fn claim(
        &self,
        ctx: &JobCtx<'_>,
        row: &DueRow,
        next: DateTime<Utc>,
        now_text: &str,
        outcome: &mut DueOutcome,
    ) -> Result<(), JobError> {
        let mut conn = ctx.store.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(scheduled_for) = &row.next else {
            let planned = tx.execute(
                &format!(
                    "UPDATE {table} SET {next} = ?2, last_error = NULL WHERE id = ?1 AND {next} IS NULL",
                    table = self.table,
                    next = self.next_column
                ),
                (&row.id, to_store_text(next)),
            )?;
            tx.commit()?;
            outcome.planned += planned as u64;
            return Ok(());
        };
        let claimed = tx.execute(
            &format!(
                "UPDATE {table} SET {next} = ?3, last_enqueued_at = ?4, last_error = NULL
                 WHERE id = ?1 AND {next} = ?2",
                table = self.table,
                next = self.next_column
            ),
            (&row.id, scheduled_for, to_store_text(next), now_text),
        )?;
        if claimed == 0 {
            // Another tick claimed it between our read and this transaction.
            return Ok(());
        }
        let payload = json!({
            self.id_key: row.id,
            "tenantId": row.tenant_id,
            "scheduledFor": scheduled_for,
        });
        let inserted = tx.execute(
            "INSERT INTO outbox (tenant_id, topic, payload, dedupe_key, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (dedupe_key) DO NOTHING",
            (
                &row.tenant_id,
                self.topic,
                payload.to_string(),
                format!("{}:{}:{scheduled_for}", self.table, row.id),
                now_text,
            ),
        )?;
        tx.commit()?;
        outcome.enqueued += inserted as u64;
        Ok(())
    }

    fn record_error(&self, ctx: &JobCtx<'_>, id: &str, error: &str) -> Result<(), JobError> {
        log::warn!("{} {id}: {error}", self.table);
        ctx.store.conn()?.execute(
            &format!("UPDATE {} SET last_error = ?2 WHERE id = ?1", self.table),
            (id, error),
        )?;
        Ok(())
    }
}
