//! Time in the tests: one agent at a time ([`serial`]) and bounded waits on
//! observable events ([`wait_until`]), never bare sleeps.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// Held for a whole test, so the tests of one binary that take it run one
/// at a time: agents measure frame rates and timings, and several at once
/// on 2 cores would measure each other. A failed test does not poison it.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a [`wait_until`] condition returns: `bool` (holds or not), or
/// `Option<T>` (`Some` ends the wait and is its value).
pub trait Outcome {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Outcome for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// Polls `cond` every 50 ms until it holds (or gives a value, returned);
/// panics with `what` after `timeout`. The conditions are observable events
/// (a metric, a message, an API answer).
pub fn wait_until<R: Outcome>(what: &str, timeout: Duration, mut cond: impl FnMut() -> R) -> R::Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond().ready() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
