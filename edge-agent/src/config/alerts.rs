//! `[alerts]` and `[spool]`: how often event messages go out, their
//! snapshots, escalation, and the durable queue they wait in.

use std::path::PathBuf;

use serde::Deserialize;

use super::check::{at_least, fail, Check};
use super::DEFAULT_SNAPSHOT_MAX_KIB;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Alerts {
    /// Minimum seconds between two `update` messages of one event.
    pub(crate) update_interval_s: f64,
    /// JPEG quality of snapshots (1–100).
    pub(crate) snapshot_quality: u8,
    /// Cap on one snapshot's size, KiB (16–960; default 512). Over it the
    /// snapshot is re-encoded at lower quality, then scaled down, then left
    /// out, so no message exceeds the MQTT client's 1 MiB packet limit (or a
    /// broker's `message_size_limit` set at or above this).
    pub(crate) snapshot_max_kb: u32,
    /// Minimum seconds between two `update`s of an event a centre has
    /// acknowledged (`ack` command).
    pub(crate) acked_update_interval_s: f64,
    /// Seconds a `start` may go unacknowledged before the agent escalates it
    /// to the next level up of the site path; 0 turns escalation off.
    pub(crate) escalate_after_s: f64,
    /// Events below this severity are never escalated.
    pub(crate) escalate_min_severity: crate::vocab::Severity,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            update_interval_s: 10.0,
            snapshot_quality: 80,
            snapshot_max_kb: DEFAULT_SNAPSHOT_MAX_KIB,
            acked_update_interval_s: 60.0,
            escalate_after_s: 120.0,
            escalate_min_severity: crate::vocab::Severity::Warning,
        }
    }
}

/// The durable alert spool (see `alert::spool`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Spool {
    /// The SQLite file. Relative paths resolve against the config file.
    pub(crate) path: PathBuf,
    /// Bound on spooled payload bytes, in MiB. When full, the oldest
    /// `update`s go first, never a `start` or an `end`.
    pub(crate) max_mb: f64,
}

impl Default for Spool {
    fn default() -> Self {
        Spool { path: PathBuf::from("/var/lib/alleywatch/spool.sqlite"), max_mb: 256.0 }
    }
}

impl Spool {
    pub(crate) fn max_bytes(&self) -> u64 {
        (self.max_mb * 1024.0 * 1024.0) as u64
    }
}

impl Alerts {
    pub(super) fn validate(&self) -> Check {
        if !(1..=100).contains(&self.snapshot_quality) {
            return fail("alerts.snapshot_quality", "must be 1–100");
        }
        if !(16..=960).contains(&self.snapshot_max_kb) {
            return fail(
                "alerts.snapshot_max_kb",
                "must be 16–960 (KiB; a message must stay under the MQTT client's 1 MiB packet limit)",
            );
        }
        if !at_least(self.update_interval_s, 0.0) {
            return fail("alerts.update_interval_s", "must be ≥ 0");
        }
        if !at_least(self.acked_update_interval_s, 0.0) {
            return fail("alerts.acked_update_interval_s", "must be ≥ 0");
        }
        if !at_least(self.escalate_after_s, 0.0) {
            return fail("alerts.escalate_after_s", "must be ≥ 0 (0 turns escalation off)");
        }
        Ok(())
    }
}

impl Spool {
    pub(super) fn validate(&self) -> Check {
        if !(self.max_mb >= 0.01 && self.max_mb <= 1_048_576.0) {
            return fail("spool.max_mb", format!("{} is outside 0.01–1048576", self.max_mb));
        }
        Ok(())
    }
}
