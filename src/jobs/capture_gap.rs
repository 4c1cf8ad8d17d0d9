//! Capture that heals, for the jobs that read a capture queue (`export-interactions`,
//! `siem-ship`) and for `serve`'s start: the triggers are checked (one look-up), recreated
//! when gone with `capture_gap` raised, and the rows inserted meanwhile recovered before the
//! run takes anything from the queue.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{JobCtx, JobError};
use crate::alert;
use crate::clock::Clock;
use crate::config::Config;
use crate::store::alerts::Outbox;
use crate::store::capture::{self, Gap, GapAlerts, KnownIds, Recovery, Source};
use crate::store::{Store, StoreError};

/// What a run's check of its capture found.
pub enum GapCheck {
    /// No gap is open (any found now was recovered): the run goes on.
    Clear(Option<Value>),
    /// A gap's recovery was stopped by the deadline or a shutdown: the run takes nothing from
    /// the queue, reports this, and is not finished.
    Unfinished(Value),
}

fn gap_alert(kind: &str, source: Source, gap: &Gap, now: DateTime<Utc>) -> Value {
    let table = source.table();
    let last_seen = gap.last_seen.as_deref().unwrap_or("an unknown time");
    let summary = if kind == alert::CAPTURE_GAP {
        format!(
            "the capture triggers of {table} were gone (last seen {last_seen}); recreated, and the rows inserted meanwhile are being recovered"
        )
    } else {
        format!(
            "the capture of {table} is whole again: {} rows inserted while its triggers were gone recovered",
            gap.recovered
        )
    };
    json!({
        "type": kind,
        "table": table,
        "summary": summary,
        "lastSeen": gap.last_seen,
        "foundAt": gap.found_at,
        "recovered": gap.recovered,
        "at": crate::clock::to_store_text(now),
    })
}

/// Lends `use_them` the alerts a gap raises, built for `now`.
fn with_gap_alerts<R>(
    config: &Config,
    now: DateTime<Utc>,
    use_them: impl FnOnce(&GapAlerts<'_>) -> R,
) -> R {
    let opened = move |source: Source, gap: &Gap| gap_alert(alert::CAPTURE_GAP, source, gap, now);
    let resolved =
        move |source: Source, gap: &Gap| gap_alert(alert::CAPTURE_GAP_RESOLVED, source, gap, now);
    use_them(&GapAlerts {
        outbox: Outbox::for_webhook(config.alerts.webhook.as_ref()),
        now,
        opened: &opened,
        resolved: &resolved,
    })
}

/// Checks the triggers of `source` and recreates them if gone (raising `capture_gap`),
/// without recovering: `serve`'s start does this, so a gap is closed as early as possible.
pub fn heal(
    store: &Store,
    config: &Config,
    clock: &dyn Clock,
    source: Source,
) -> Result<(), StoreError> {
    let raised = with_gap_alerts(config, clock.now(), |alerts| {
        capture::heal(store, source, alerts)
    })?;
    if let Some(raised) = raised {
        alert::log(&raised);
    }
    Ok(())
}

/// A consumer's check at the start of its run: heals the triggers, then recovers an open gap
/// (`known` adds the ids the consumer took). A dry run only heals.
pub fn check<E: From<StoreError> + Into<JobError>>(
    ctx: &JobCtx<'_>,
    source: Source,
    known: impl FnOnce(&mut KnownIds) -> Result<(), E>,
) -> Result<GapCheck, JobError> {
    heal(ctx.store, ctx.config, ctx.clock, source)?;
    if ctx.params.dry_run {
        return Ok(GapCheck::Clear(None));
    }
    let should_stop = || ctx.should_stop();
    let recovery = with_gap_alerts(ctx.config, ctx.now(), |alerts| {
        capture::recover_gap(ctx.store, source, known, &should_stop, alerts)
    })
    .map_err(Into::into)?;
    let report = |recovered: u64, finished: bool| json!({"table": source.table(), "recovered": recovered, "finished": finished});
    Ok(match recovery {
        None => GapCheck::Clear(None),
        Some(Recovery::Done { recovered, alert }) => {
            alert::log(&alert);
            GapCheck::Clear(Some(report(recovered, true)))
        }
        Some(Recovery::Stopped { recovered }) => GapCheck::Unfinished(report(recovered, false)),
    })
}
