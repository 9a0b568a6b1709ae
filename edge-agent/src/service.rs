//! The service manager's side of the agent: systemd's `Type=notify`
//! readiness and watchdog (`sd_notify(3)`), through the `sd-notify` crate.
//!
//! `READY=1` goes out once models are loaded and the cameras are started,
//! so `systemctl start` returns when the agent really runs and a unit that
//! orders itself after it waits for that. `WATCHDOG=1` pings come from the
//! pipeline manager's own loop at half of `WatchdogSec`, and only while
//! every camera's analysis thread and stream supervisor show a recent
//! [`Heartbeat`]: if the manager, an analysis thread or a supervisor wedges
//! (a stuck inference, a deadlock, a GStreamer call that never returns),
//! the pings stop and systemd restarts the agent. Outside systemd (no
//! `NOTIFY_SOCKET`, no `WATCHDOG_USEC`) every call is a no-op.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

pub(crate) struct Service {
    /// Half the watchdog timeout, when systemd asked for pings.
    every: Option<Duration>,
    next: tokio::time::Instant,
}

impl Service {
    /// Tells the service manager the agent is up.
    pub(crate) fn ready() -> Service {
        notify(&[NotifyState::Ready, NotifyState::Status("running")]);
        let every = sd_notify::watchdog_enabled().map(|t| t / 2).filter(|d| !d.is_zero());
        if let Some(d) = every {
            tracing::info!(every_s = d.as_secs_f64(), "systemd watchdog enabled");
        }
        Service { every, next: tokio::time::Instant::now() }
    }

    /// Resolves when the next watchdog ping is due; never without a
    /// watchdog.
    pub(crate) async fn watchdog_due(&self) {
        match self.every {
            Some(_) => tokio::time::sleep_until(self.next).await,
            None => std::future::pending().await,
        }
    }

    /// Pings the watchdog, unless a thread in `stale` stopped beating:
    /// then the ping is withheld (and logged), so systemd restarts a wedged
    /// agent rather than one that merely looks alive.
    pub(crate) fn ping(&mut self, stale: &[String]) {
        let Some(every) = self.every else { return };
        if stale.is_empty() {
            notify(&[NotifyState::Watchdog]);
        } else {
            tracing::error!(threads = ?stale, "no sign of life from these threads; withholding the watchdog ping");
        }
        self.next = tokio::time::Instant::now() + every;
    }

    /// Graceful stop begins (draining may take a while).
    pub(crate) fn stopping(&self) {
        notify(&[NotifyState::Stopping, NotifyState::Status("stopping: draining the spool")]);
    }
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// A thread's sign of life for the watchdog: it beats on every cycle of its
/// loop (the analysis loop cycles at least twice a second, frames or not).
#[derive(Debug, Clone)]
pub(crate) struct Heartbeat(Arc<AtomicU64>);

/// How long a thread may go without a beat before the watchdog ping is
/// withheld (well under the unit's `WatchdogSec=30`).
pub(crate) const STALE: Duration = Duration::from_secs(20);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Default for Heartbeat {
    fn default() -> Self {
        let h = Heartbeat(Arc::new(AtomicU64::new(0)));
        h.beat();
        h
    }
}

impl Heartbeat {
    pub(crate) fn beat(&self) {
        self.0.store(epoch().elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub(crate) fn age(&self) -> Duration {
        epoch().elapsed().saturating_sub(Duration::from_millis(self.0.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_ages_until_it_beats() {
        let h = Heartbeat::default();
        assert!(h.age() < Duration::from_secs(1));
        h.0.store(0, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        assert!(h.age() >= Duration::from_millis(20), "{:?}", h.age());
        h.beat();
        assert!(h.age() < Duration::from_millis(20));
    }
}
