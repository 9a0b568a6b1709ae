//! The service manager's side of the agent: systemd's `Type=notify`
//! readiness and watchdog (`sd_notify(3)`), through the `sd-notify` crate.
//!
//! `READY=1` goes out once models are loaded and the cameras are started,
//! so `systemctl start` returns when the agent really runs and a unit that
//! orders itself after it waits for that. `WATCHDOG=1` pings come from the
//! pipeline manager's own loop at half of `WatchdogSec`: if that loop
//! wedges, the pings stop and systemd restarts the agent. Outside systemd
//! (no `NOTIFY_SOCKET`, no `WATCHDOG_USEC`) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

pub struct Service {
    /// Half the watchdog timeout, when systemd asked for pings.
    every: Option<Duration>,
    next: tokio::time::Instant,
}

impl Service {
    /// Tells the service manager the agent is up.
    pub fn ready() -> Service {
        notify(&[NotifyState::Ready, NotifyState::Status("running")]);
        let every = sd_notify::watchdog_enabled().map(|t| t / 2).filter(|d| !d.is_zero());
        if let Some(d) = every {
            tracing::info!(every_s = d.as_secs_f64(), "systemd watchdog enabled");
        }
        Service { every, next: tokio::time::Instant::now() }
    }

    /// Resolves when the next watchdog ping is due; never without a
    /// watchdog.
    pub async fn watchdog_due(&self) {
        match self.every {
            Some(_) => tokio::time::sleep_until(self.next).await,
            None => std::future::pending().await,
        }
    }

    pub fn ping(&mut self) {
        if let Some(every) = self.every {
            notify(&[NotifyState::Watchdog]);
            self.next = tokio::time::Instant::now() + every;
        }
    }

    /// Graceful stop begins (draining may take a while).
    pub fn stopping(&self) {
        notify(&[NotifyState::Stopping, NotifyState::Status("stopping: draining the spool")]);
    }
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}
