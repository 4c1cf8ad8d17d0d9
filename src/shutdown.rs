//! The process-wide request to stop: set once by SIGTERM/SIGINT, seen by every loop and job.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

#[derive(Default)]
pub struct Shutdown {
    requested: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Shutdown {
    pub fn request(&self) {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.requested.store(true, Ordering::SeqCst);
        self.wake.notify_all();
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Sleeps for `duration` or until shutdown is requested; answers whether it was.
    pub fn wait(&self, duration: Duration) -> bool {
        let guard = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (_guard, _) = self
            .wake
            .wait_timeout_while(guard, duration, |_| !self.is_requested())
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.is_requested()
    }
}
