//! The heartbeat of a running run: a side thread that refreshes the run's lease (so other
//! processes see its holder alive) and raises `job_overrun` once if the run is still going
//! [`OVERRUN_GRACE`] after its deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::alert::{self, Alerts};
use crate::clock::Clock;
use crate::holder;
use crate::store::Store;
use crate::store::runs;

/// A run still going this long after its deadline did not reach a safe point: `job_overrun`.
pub const OVERRUN_GRACE: Duration = Duration::from_secs(2);

/// The run a heartbeat beats for.
pub struct Beat {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub alerts: Alerts,
    pub job_name: &'static str,
    pub run_id: i64,
    /// When the run should stop at its next safe point.
    pub deadline: Instant,
    /// `EDGECRON_JOB_DEADLINE_SECS`, for the alert.
    pub job_deadline: Duration,
}

/// Stops the heartbeat thread when dropped (the channel closes).
pub struct HeartbeatGuard {
    _stop: mpsc::Sender<()>,
}

/// Beats until the returned guard is dropped; sets `lease_lost` if another process took the
/// lease over.
pub fn start(beat: Beat, lease_lost: Arc<AtomicBool>) -> HeartbeatGuard {
    let (stop, stopped) = mpsc::channel::<()>();
    let job_name = beat.job_name;
    let spawned = std::thread::Builder::new()
        .name(format!("heartbeat-{job_name}"))
        .spawn(move || run(beat, &stopped, &lease_lost));
    if let Err(error) = spawned {
        log::warn!("{job_name}: no heartbeat thread ({error}); the lease may look stale");
    }
    HeartbeatGuard { _stop: stop }
}

fn run(beat: Beat, stopped: &mpsc::Receiver<()>, lease_lost: &AtomicBool) {
    let Beat {
        store,
        clock,
        alerts,
        job_name,
        run_id,
        deadline,
        job_deadline,
    } = beat;
    let started = Instant::now();
    let mut overrun_at = Some(deadline + OVERRUN_GRACE);
    let mut next_beat = started + holder::HEARTBEAT_INTERVAL;
    loop {
        let wake = overrun_at.map_or(next_beat, |at| at.min(next_beat));
        let wait = wake.saturating_duration_since(Instant::now());
        if !matches!(stopped.recv_timeout(wait), Err(RecvTimeoutError::Timeout)) {
            return;
        }
        let now = Instant::now();
        if overrun_at.is_some_and(|at| now >= at) {
            overrun_at = None;
            match alert::run_overran(
                &store,
                job_name,
                run_id,
                job_deadline,
                started.elapsed(),
                alerts.outbox(),
                clock.now(),
            ) {
                Ok(raised) => alerts.announce(&raised.into_iter().collect::<Vec<_>>()),
                Err(error) => log::warn!("{job_name}: recording its overrun: {error}"),
            }
        }
        if now < next_beat {
            continue;
        }
        next_beat = now + holder::HEARTBEAT_INTERVAL;
        match runs::heartbeat(&store, job_name, run_id, clock.now()) {
            Ok(true) => {}
            Ok(false) => {
                log::error!("{job_name}: run {run_id} lost its lease; stopping it");
                lease_lost.store(true, Ordering::SeqCst);
            }
            Err(error) => log::warn!("{job_name}: heartbeat of run {run_id} failed: {error}"),
        }
    }
}
