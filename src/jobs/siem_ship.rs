//! `siem-ship`: ship audit-log rows to the configured SIEM in the order they were committed
//! (`store::siem_ledger`), in batches of at most 500, until caught up or the deadline.
//!
//! A batch's rows are taken only once the intake acknowledged them, refused them for good
//! (kept as dead letters) or they were archived (too old for Datadog), committed after each
//! batch. So every row reaches the SIEM at least once, whatever its `created_at` says, and a
//! row is only sent twice when an acknowledgement was lost (Elastic's `_id` makes even that
//! harmless).

use std::sync::Once;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::capture_gap::{self, GapCheck};
use super::{Consuming, Job, JobCtx, JobError, JobOutput, archive};
use crate::clock::to_store_text;
use crate::config::siem::{SiemSettings, SiemStart};
use crate::export::storage::Storage;
use crate::siem::intake::{Intake, Retry};
use crate::siem::{self, AuditRow, Fate, Siem};
use crate::store::capture::{self, FirstWalk, Source};
use crate::store::siem_ledger::{self, DeadLetter};

pub struct SiemShip;

const BATCH: usize = 500;
/// Runs in a row delivering nothing before the log says so as an error.
const STALLED_RUNS_WARNING: i64 = 3;
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Default)]
struct Totals {
    scanned: u64,
    /// Rows already in the store when a `SIEM_START=now` backend began: taken, not sent.
    skipped: u64,
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

    fn consumes(&self, config: &crate::config::Config) -> Option<(Source, Consuming)> {
        let consuming = match config.siem {
            Siem::On(_) => Consuming::Yes,
            Siem::Off(_) => Consuming::No,
        };
        Some((Source::Audit, consuming))
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let settings = match &ctx.config.siem {
            Siem::Off(reason) => return skip(ctx, reason),
            Siem::On(settings) => settings,
        };
        let backend = settings.backend.name();
        if !ctx.params.dry_run {
            let first_walk = match settings.start {
                SiemStart::Beginning => FirstWalk::Delivers,
                SiemStart::Now => FirstWalk::TakesUnsent,
            };
            siem_ledger::select_backend(ctx.store, backend, first_walk)?;
        }
        let gap = match capture_gap::check(ctx, Source::Audit, siem_ledger::shipped_ids)? {
            GapCheck::Clear(report) => report,
            // Nothing is taken from the queue until every missed row is in it.
            GapCheck::Unfinished(report) => {
                let waiting = Recovering {
                    backend,
                    shipped: 0,
                    errors: 0,
                    window_seconds: 0,
                    rows_scanned: 0,
                    finished: false,
                    capture_gap: report,
                };
                return JobOutput::new(&waiting, 1, 0);
            }
        };
        if ctx.params.dry_run {
            let backlog = capture::note_backlog(ctx.store, Source::Audit)?;
            let dry_run = DryRun {
                backend,
                shipped: 0,
                errors: 0,
                window_seconds: 0,
                rows_scanned: 0,
                cursor: None,
                backlog,
                dry_run: true,
            };
            return JobOutput::new(&dry_run, 0, 0);
        }
        let walk = ship(ctx, settings)?;
        conclude(ctx, backend, walk, gap)
    }
}

/// No backend: what waits is noted (kept for the next backend, never dropped unseen).
fn skip(ctx: &JobCtx<'_>, reason: &str) -> Result<JobOutput, JobError> {
    let waiting = capture::note_backlog(ctx.store, Source::Audit)?;
    // Every 5 minutes for the process's life would bury the logs; once tells.
    static SKIP_LOGGED: Once = Once::new();
    SKIP_LOGGED.call_once(|| {
        log::warn!("siem-ship: skipped: {reason}; {waiting} audit rows wait for a backend")
    });
    let skipped = Off {
        skipped: reason,
        backlog: Some(waiting).filter(|waiting| *waiting > 0),
    };
    JobOutput::new(&skipped, 0, 0)
}

/// What the shipping walk did.
struct Walk {
    totals: Totals,
    last_shipped: Option<AuditRow>,
    /// The span of `created_at` of the rows settled.
    span: Option<(DateTime<Utc>, DateTime<Utc>)>,
    archives: Vec<String>,
    /// Why the intake stopped the walk, if it did.
    stopped: Option<String>,
    finished: bool,
}

/// Ships batch after batch until the queue is empty, the intake stops the walk, or the run
/// must stop; each batch's settled rows are recorded with the ledger's progress.
fn ship(ctx: &JobCtx<'_>, settings: &SiemSettings) -> Result<Walk, JobError> {
    let backend = settings.backend.name();
    let intake = Intake::new(settings);
    let mut retry = Retry::new(ctx.deadline, ctx.shutdown);
    let storage = ctx.storage()?;
    let mut walk = Walk {
        totals: Totals::default(),
        last_shipped: None,
        span: None,
        archives: Vec::new(),
        stopped: None,
        finished: true,
    };
    let mut last_log = Instant::now();
    loop {
        if ctx.should_stop() {
            walk.finished = false;
            break;
        }
        let batch = siem_ledger::next_batch(ctx.store, backend, BATCH)?;
        if batch.is_empty() {
            break;
        }
        let rows = &batch.rows;
        walk.totals.scanned += rows.len() as u64;
        if batch.taken_unsent() {
            let now = to_store_text(ctx.now());
            siem_ledger::record(ctx.store, backend, &batch, rows.len(), &[], &now)?;
            walk.totals.skipped += rows.len() as u64;
            continue;
        }
        let shipment = siem::deliver(&intake, &mut retry, rows, ctx.now());
        let fates = shipment.settled_prefix();
        let settled = &rows[..fates.len()];
        let stale: Vec<&AuditRow> = settled
            .iter()
            .zip(&fates)
            .filter(|(_, fate)| matches!(fate, Fate::Archive))
            .map(|(row, _)| row)
            .collect();
        if !stale.is_empty() {
            let archived = archive_stale(ctx, storage.as_ref(), backend, &stale)?;
            walk.archives.push(archived);
        }
        let letters = dead_letters(settled, &fates);
        for row in settled {
            if let Some(time) = row.time() {
                walk.span = Some(
                    walk.span
                        .map_or((time, time), |(from, to)| (from.min(time), to.max(time))),
                );
            }
        }
        siem_ledger::record(
            ctx.store,
            backend,
            &batch,
            settled.len(),
            &letters,
            &to_store_text(ctx.now()),
        )?;
        if let Some(last) = settled.last() {
            walk.last_shipped = Some(last.clone());
        }
        walk.totals.dead_lettered += letters.len() as u64;
        walk.totals.archived += stale.len() as u64;
        walk.totals.shipped += (fates.len() - letters.len() - stale.len()) as u64;
        if let Some(why) = shipment.stopped {
            walk.stopped = Some(why);
            break;
        }
        if last_log.elapsed() >= PROGRESS_EVERY {
            log::info!(
                "siem-ship: {} rows shipped to {backend} so far",
                walk.totals.shipped
            );
            last_log = Instant::now();
        }
    }
    Ok(walk)
}

/// The settled rows the intake refused for good, each logged.
fn dead_letters<'a>(settled: &'a [AuditRow], fates: &[&'a Fate]) -> Vec<DeadLetter<'a>> {
    let letters: Vec<DeadLetter<'a>> = settled
        .iter()
        .zip(fates)
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
    for letter in &letters {
        log::warn!(
            "siem-ship: audit row {} dead-lettered: {}",
            letter.row.id,
            letter.reason
        );
    }
    letters
}

/// The run's result: a failure when the intake took nothing, else what was shipped.
fn conclude(
    ctx: &JobCtx<'_>,
    backend: &'static str,
    walk: Walk,
    gap: Option<Value>,
) -> Result<JobOutput, JobError> {
    let Walk {
        totals,
        last_shipped,
        span,
        archives,
        stopped,
        finished,
    } = walk;
    let backlog = capture::note_backlog(ctx.store, Source::Audit)?;
    capture::record_backlog(ctx.store, Source::Audit, backlog)?;
    let settled = totals.shipped + totals.dead_lettered + totals.archived;
    // Stopping for the deadline or shutdown is not the intake failing.
    let intake_failed = stopped.is_some() && !ctx.should_stop();
    if let Some(why) = &stopped
        && intake_failed
        && settled == 0
    {
        let stalled =
            siem_ledger::record_stall(ctx.store, backend, why, &to_store_text(ctx.now()))?;
        if stalled >= STALLED_RUNS_WARNING {
            log::error!(
                "siem-ship: {backend} has delivered nothing for {stalled} runs in a row; {backlog} audit rows wait"
            );
        }
        return Err(JobError::Failed(format!(
            "{backend} intake: {why}; nothing shipped ({stalled} runs in a row), {backlog} rows wait"
        )));
    }
    if let Some(why) = &stopped {
        log::warn!("siem-ship: {backend} stopped part-way ({why}); {backlog} rows wait");
    }
    let window_seconds = span.map_or(0, |(from, to)| (to - from).num_seconds().max(0));
    let report = Report {
        backend,
        shipped: totals.shipped,
        errors: totals.dead_lettered,
        archived: totals.archived,
        archives,
        skipped: totals.skipped,
        window_seconds,
        rows_scanned: totals.scanned,
        cursor: last_shipped.as_ref().map(Cursor::of),
        backlog,
        finished: finished && stopped.is_none(),
        stopped,
        capture_gap: gap,
    };
    let item_errors = totals.dead_lettered + u64::from(intake_failed);
    JobOutput::new(&report, item_errors, settled)
}

/// A run's result.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    backend: &'a str,
    shipped: u64,
    /// Rows the intake refused for good, dead-lettered.
    errors: u64,
    /// Rows too old for the intake, archived.
    archived: u64,
    archives: Vec<String>,
    /// Rows in the store before a `SIEM_START=now` backend began: taken, not sent.
    skipped: u64,
    window_seconds: i64,
    rows_scanned: u64,
    cursor: Option<Cursor<'a>>,
    backlog: u64,
    finished: bool,
    stopped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capture_gap: Option<Value>,
}

/// No backend configured: what waits for one.
#[derive(Serialize)]
struct Off<'a> {
    skipped: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    backlog: Option<u64>,
}

/// A gap's recovery did not finish: nothing was shipped.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Recovering<'a> {
    backend: &'a str,
    shipped: u64,
    errors: u64,
    window_seconds: i64,
    rows_scanned: u64,
    finished: bool,
    capture_gap: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DryRun<'a> {
    backend: &'a str,
    shipped: u64,
    errors: u64,
    window_seconds: i64,
    rows_scanned: u64,
    cursor: Option<Cursor<'a>>,
    backlog: u64,
    dry_run: bool,
}

/// The last row this run settled, as the result names it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Cursor<'a> {
    created_at: &'a str,
    id: &'a str,
}

impl Cursor<'_> {
    fn of(row: &AuditRow) -> Cursor<'_> {
        Cursor {
            created_at: &row.created_at,
            id: &row.id,
        }
    }
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
    let mut lines = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut lines, &row.fields)
            .map_err(|error| JobError::Failed(error.to_string()))?;
        lines.push(b'\n');
    }
    let compression = ctx.config.export_compression;
    let relative = archive::relative_path(
        "audit_log",
        &ctx.site()?,
        &format!(
            "{backend}-too-old-{}",
            archive::stem(&first.created_at, &first.id)
        ),
        &lines,
        compression,
    );
    archive::write(
        ctx.data_dir(),
        &relative,
        &archive::encode(&lines, compression)?,
    )?;
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
    use serde_json::json;

    #[test]
    fn an_unset_backend_is_a_structured_no_op() {
        let harness = Harness::new(Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
        let output = SiemShip.run(&harness.ctx()).unwrap();
        assert_eq!(
            Value::Object(output.body),
            json!({"skipped": "SIEM_BACKEND is not set"})
        );
    }
}
