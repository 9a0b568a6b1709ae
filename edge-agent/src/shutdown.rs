//! One shutdown signal, cloned into every task and thread.
//!
//! The agent mixes async tasks (MQTT) with plain threads (GStreamer bus
//! supervisors, analysis), so the token serves both: threads block on a
//! condvar with a timeout, tasks await a `Notify`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    flag: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
    notify: tokio::sync::Notify,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    pub fn trigger(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        let _guard = self.inner.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.cond.notify_all();
        self.inner.notify.notify_waiters();
    }

    pub(crate) fn is_triggered(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Blocks a thread for up to `d`; returns true when shutdown was asked.
    pub(crate) fn wait_timeout(&self, d: Duration) -> bool {
        let guard = self.inner.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_triggered() {
            return true;
        }
        let _ = self.inner.cond.wait_timeout(guard, d);
        self.is_triggered()
    }

    /// Resolves when shutdown is asked.
    pub async fn wait(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}
