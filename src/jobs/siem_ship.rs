//! `siem-ship`: ship audit-log rows to the configured SIEM from a per-backend cursor, in
//! batches of at most 500, until caught up or the deadline.
//!
//! The cursor moves only past rows the intake acknowledged, refused for good (kept as dead
//! letters) or that were archived (too old for Datadog), committed after each batch. So every
//! row reaches the SIEM at least once, and a row is only sent twice when an acknowledgement
//! was lost (Elastic's `_id` makes even that harmless).

use std::sync::Once;
use std::time::Instant;

use chrono::Duration;
use serde_json::{Value, json};

use super::{Job, JobCtx, JobError, JobOutput, archive};
use crate::clock::{from_store_text, to_store_text};
use crate::export::storage::Storage;
use crate::siem::intake::{Intake, Retry};
use crate::siem::ledger::{self, DeadLetter};
use crate::siem::{self, AuditRow, Fate, Siem};
use crate::store::Cursor;

pub struct SiemShip;

const BATCH: usize = 500;
/// Rows younger than this wait for a later run. An application that stamps `created_at`
/// itself before its transaction commits can make a row visible after a later-stamped one;
/// a keyset cursor that had already passed it would skip it.
const SETTLE: Duration = Duration::seconds(30);
/// Runs in a row delivering nothing before the log says so as an error.
const STALLED_RUNS_WARNING: i64 = 3;
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Default)]
struct Totals {
    scanned: u64,
    shipped: u64,
    dead_lettered: u64,
    archived: u64,
}

impl Job for SiemShip {
    fn name(&self) -> &'static str {
        "siem-ship"
    }

    fn default_schedule(&self) -> &'static str {
        "*/5 * * * *"
    }

    fn enabled_by_default(&self, _config: &crate::config::Config) -> bool {
        false
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let settings = match &ctx.config.siem {
            Siem::Off(reason) => {
                // Every 5 minutes for the process's life would bury the logs; once tells.
                static SKIP_LOGGED: Once = Once::new();
                SKIP_LOGGED.call_once(|| log::warn!("siem-ship: skipped: {reason}"));
                return Ok(JobOutput {
                    body: json!({"ok": true, "skipped": reason}),
                    item_errors: 0,
                    rows_processed: 0,
                });
            }
            Siem::On(settings) => settings,
        };
        let backend = settings.backend.name();
        let start = ledger::cursor(ctx.store, backend)?;
        if ctx.params.dry_run {
            let backlog = ledger::backlog(ctx.store, &start)?;
            return Ok(JobOutput {
                body: json!({"ok": true, "backend": backend, "shipped": 0, "errors": 0,
                             "windowSeconds": 0, "rowsScanned": 0, "cursor": cursor_json(&start),
                             "backlog": backlog, "dryRun": true}),
                item_errors: 0,
                rows_processed: 0,
            });
        }
        let intake = Intake::new(settings);
        let mut retry = Retry::new(ctx.deadline, ctx.shutdown);
        let storage = ctx.storage()?;
        let until = to_store_text(ctx.now() - SETTLE);
        let mut cursor = start.clone();
        let mut first_settled = None;
        let mut totals = Totals::default();
        let mut archives = Vec::new();
        let mut stopped = None;
        let mut finished = true;
        let mut last_log = Instant::now();
        loop {
            if ctx.should_stop() {
                finished = false;
                break;
            }
            let rows = ledger::rows_after(ctx.store, &cursor, &until, BATCH)?;
            if rows.is_empty() {
                break;
            }
            totals.scanned += rows.len() as u64;
            let shipment = siem::deliver(&intake, &mut retry, &rows, ctx.now());
            let fates = shipment.settled_prefix();
            let settled = &rows[..fates.len()];
            let stale: Vec<&AuditRow> = settled
                .iter()
                .zip(&fates)
                .filter(|(_, fate)| matches!(fate, Fate::Archive))
                .map(|(row, _)| row)
                .collect();
            if !stale.is_empty() {
                archives.push(archive_stale(ctx, storage.as_ref(), backend, &stale)?);
            }
            let letters: Vec<DeadLetter<'_>> = settled
                .iter()
                .zip(&fates)
                .filter_map(|(row, fate)| match fate {
                    Fate::DeadLetter {
                        status,
                        reason,
                        event,
                    } => Some(DeadLetter {
                        row,
                        status: *status,
                        reason,
                        event,
                    }),
                    _ => None,
                })
                .collect();
            if first_settled.is_none() {
                first_settled = settled.first().map(|row| row.created_at.clone());
            }
            for letter in &letters {
                log::warn!(
                    "siem-ship: audit row {} dead-lettered: {}",
                    letter.row.id,
                    letter.reason
                );
            }
            if let Some(last) = settled.last() {
                cursor = last.cursor();
                ledger::record(
                    ctx.store,
                    backend,
                    &cursor,
                    &letters,
                    &to_store_text(ctx.now()),
                )?;
            }
            totals.dead_lettered += letters.len() as u64;
            totals.archived += stale.len() as u64;
            totals.shipped += (fates.len() - letters.len() - stale.len()) as u64;
            if let Some(why) = shipment.stopped {
                stopped = Some(why);
                break;
            }
            if rows.len() < BATCH {
                break;
            }
            if last_log.elapsed() >= PROGRESS_EVERY {
                log::info!(
                    "siem-ship: {} rows shipped to {backend} so far, cursor at {} {}",
                    totals.shipped,
                    cursor.created_at,
                    cursor.id
                );
                last_log = Instant::now();
            }
        }
        let backlog = ledger::backlog(ctx.store, &cursor)?;
        let non_canonical = ledger::non_canonical_times(ctx.store)?;
        if non_canonical > 0 {
            log::warn!(
                "siem-ship: {non_canonical} audit rows have a created_at not in the form 2026-03-30T02:00:00.000Z; the cursor's order cannot place them and may pass them by"
            );
        }
        let settled = totals.shipped + totals.dead_lettered + totals.archived;
        // Stopping for the deadline or shutdown is not the intake failing.
        let intake_failed = stopped.is_some() && !ctx.should_stop();
        if let Some(why) = &stopped
            && intake_failed
            && settled == 0
        {
            let stalled = ledger::record_stall(ctx.store, backend, why, &to_store_text(ctx.now()))?;
            if stalled >= STALLED_RUNS_WARNING {
                log::error!(
                    "siem-ship: {backend} has delivered nothing for {stalled} runs in a row; {backlog} audit rows wait"
                );
            }
            return Err(JobError::Failed(format!(
                "{backend} intake: {why}; nothing shipped ({stalled} runs in a row), {backlog} rows wait after the cursor"
            )));
        }
        if let Some(why) = &stopped {
            log::warn!("siem-ship: {backend} stopped part-way ({why}); {backlog} rows wait");
        }
        // The span of `created_at` this run covered, from where it started (or its first row).
        let window_start = from_store_text(&start.created_at)
            .or_else(|| first_settled.as_deref().and_then(from_store_text));
        let window_seconds = match (window_start, from_store_text(&cursor.created_at)) {
            (Some(from), Some(to)) => (to - from).num_seconds().max(0),
            _ => 0,
        };
        Ok(JobOutput {
            body: json!({
                "ok": !intake_failed && totals.dead_lettered == 0,
                "backend": backend,
                "shipped": totals.shipped,
                "errors": totals.dead_lettered,
                "archived": totals.archived,
                "archives": archives,
                "windowSeconds": window_seconds,
                "rowsScanned": totals.scanned,
                "cursor": cursor_json(&cursor),
                "backlog": backlog,
                "finished": finished && stopped.is_none(),
                "stopped": stopped,
                "nonCanonicalTimes": non_canonical,
            }),
            item_errors: totals.dead_lettered + u64::from(intake_failed),
            rows_processed: settled,
        })
    }
}

fn cursor_json(cursor: &Cursor) -> Value {
    if cursor.id.is_empty() {
        return Value::Null;
    }
    json!({"createdAt": cursor.created_at, "id": cursor.id})
}

/// Archives rows too old for the intake as NDJSON under the data dir, or in the configured
/// bucket. If the bucket is unreachable the local file stays: the rows are kept either way.
fn archive_stale(
    ctx: &JobCtx<'_>,
    storage: Option<&Storage>,
    backend: &str,
    rows: &[&AuditRow],
) -> Result<String, JobError> {
    let first = rows[0];
    let relative = format!(
        "archive/audit_log/{backend}-too-old-{}.ndjson",
        archive::stem(&first.created_at, &first.id)
    );
    let mut lines = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut lines, &row.fields)
            .map_err(|error| JobError::Failed(error.to_string()))?;
        lines.push(b'\n');
    }
    archive::write(ctx.data_dir(), &relative, &lines)?;
    log::warn!(
        "siem-ship: {} audit rows too old for {backend} archived to {relative}",
        rows.len()
    );
    let Some(storage) = storage else {
        return Ok(relative);
    };
    let local = ctx.data_dir().join(&relative);
    let key = storage.key(&relative);
    match storage.upload(&local, &key) {
        Ok(_) => {
            std::fs::remove_file(&local)
                .map_err(JobError::io(format!("removing {}", local.display())))?;
            Ok(format!("s3://{}/{key}", storage.bucket()))
        }
        Err(error) => {
            log::warn!("siem-ship: {relative} stays local, not uploaded: {error}");
            Ok(relative)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::{TimeZone, Utc};

    #[test]
    fn an_unset_backend_is_a_structured_no_op() {
        let harness = Harness::new(Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
        let output = SiemShip.run(&harness.ctx()).unwrap();
        assert_eq!(
            output.body,
            json!({"ok": true, "skipped": "SIEM_BACKEND is not set"})
        );
    }
}
