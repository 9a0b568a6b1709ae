//! The door from the data path to the command centres: analysis threads
//! hand event messages here, camera supervisors hand statuses here, and the
//! [`super::Publisher`] task takes both out.
//!
//! An event passes the closed-loop [`Ledger`] (ack throttling, resolved
//! events), then goes into the durable [`Spool`] on the caller's thread, so
//! it is on disk before analysis moves on to the next frame. Camera statuses
//! are retained and superseded by the next one, so only the latest per
//! camera is kept, in memory, and re-sent on every reconnect.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::ledger::{Ledger, Verdict};
use super::spool::{Dropped, Spool};
use super::{Event, Outbound, Topics};
use crate::metrics::Metrics;
use crate::source::CameraStatus;

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    spool: Spool,
    ledger: Mutex<Ledger>,
    topics: Topics,
    metrics: Arc<Metrics>,
    /// Wakes the publisher: a message is waiting.
    wake: Notify,
    statuses: Mutex<Statuses>,
    /// Messages the spool could not store (disk full, I/O error): sent
    /// from memory, so an alert still goes out while the box is up.
    unspooled: Mutex<VecDeque<(Event, Option<Vec<u8>>)>>,
    /// The last [`RECENT`] event messages sent, newest last, for the
    /// technician's page (a summary each, without evidence).
    recent: Mutex<VecDeque<serde_json::Value>>,
}

/// How many recent event messages `/api/events` shows.
pub const RECENT: usize = 50;

#[derive(Default)]
struct Statuses {
    latest: HashMap<String, CameraStatus>,
    /// Camera ids whose latest status is not yet published.
    dirty: Vec<String>,
    /// Cameras removed by a reload: their retained status is cleared.
    removed: Vec<String>,
}

impl Outbox {
    pub fn new(spool: Spool, ledger: Ledger, topics: Topics, metrics: Arc<Metrics>) -> Outbox {
        if let Ok(seq) = spool.last_seq() {
            metrics.last_seq.set(seq as i64);
        }
        Outbox {
            inner: Arc::new(Inner {
                spool,
                ledger: Mutex::new(ledger),
                topics,
                metrics,
                wake: Notify::new(),
                statuses: Mutex::default(),
                unspooled: Mutex::default(),
                recent: Mutex::default(),
            }),
        }
    }

    /// Routes one message from analysis or a supervisor.
    pub fn send(&self, msg: Outbound) {
        match msg {
            Outbound::Event { event, snapshot } => self.event(*event, snapshot),
            Outbound::Camera(status) => self.camera_status(status),
            Outbound::Close { event_id, reason } => {
                let end = self.ledger().close(&event_id, reason);
                if let Some(end) = end {
                    self.event(end, None);
                }
            }
        }
    }

    /// Admits, spools (durably) and announces one event message.
    pub fn event(&self, mut event: Event, snapshot: Option<Vec<u8>>) {
        let m = &self.inner.metrics;
        if let Verdict::Suppress(reason) = self.ledger().admit(&mut event, Instant::now()) {
            m.events_suppressed.with_label_values(&[reason]).inc();
            tracing::debug!(id = %event.id, reason, "event message suppressed");
            return;
        }
        let pushed = self.inner.spool.push(&mut event, snapshot.as_deref(), &self.inner.topics);
        self.remember(&event);
        match pushed {
            Ok(pushed) => {
                m.last_seq.set(pushed.seq as i64);
                for d in &pushed.dropped {
                    let (what, seq, id) = match d {
                        Dropped::Update { seq, event_id } => ("update", seq, event_id),
                        Dropped::Snapshot { seq, event_id } => ("snapshot", seq, event_id),
                    };
                    m.spool_dropped.with_label_values(&[what]).inc();
                    tracing::warn!(what, seq, event = %id, "spool full: dropped the oldest {what}");
                }
                if pushed.over_bound {
                    tracing::warn!(
                        spool = %self.inner.spool.path().display(),
                        "spool over its bound with only start/end messages left; keeping them"
                    );
                }
            }
            Err(e) => {
                m.spool_errors.inc();
                tracing::error!(error = %e, id = %event.id, "cannot spool event; sending it from memory");
                self.unspooled().push_back((event, snapshot));
            }
        }
        self.inner.wake.notify_one();
    }

    fn remember(&self, event: &Event) {
        let Ok(serde_json::Value::Object(full)) = serde_json::to_value(event) else { return };
        let keep = ["id", "seq", "kind", "type", "severity", "camera", "zone", "updated_at", "duration_s", "score"];
        let summary: serde_json::Map<_, _> = full.into_iter().filter(|(k, _)| keep.contains(&k.as_str())).collect();
        let mut r = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == RECENT {
            r.pop_front();
        }
        r.push_back(serde_json::Value::Object(summary));
    }

    /// The most recent event messages, newest first.
    pub fn recent_events(&self) -> Vec<serde_json::Value> {
        self.inner.recent.lock().unwrap_or_else(|p| p.into_inner()).iter().rev().cloned().collect()
    }

    /// Records a camera's latest status for the retained topic and `/api`.
    pub fn camera_status(&self, status: CameraStatus) {
        let mut s = self.statuses();
        if !s.dirty.contains(&status.camera) {
            s.dirty.push(status.camera.clone());
        }
        s.latest.insert(status.camera.clone(), status);
        drop(s);
        self.inner.wake.notify_one();
    }

    /// Forgets a camera a reload removed; its retained status is cleared.
    pub fn camera_removed(&self, camera: &str) {
        let mut s = self.statuses();
        s.latest.remove(camera);
        s.dirty.retain(|c| c != camera);
        s.removed.push(camera.to_string());
        drop(s);
        self.inner.wake.notify_one();
    }

    /// Every camera's latest status, by camera id.
    pub fn camera_statuses(&self) -> Vec<CameraStatus> {
        let mut v: Vec<CameraStatus> = self.statuses().latest.values().cloned().collect();
        v.sort_by(|a, b| a.camera.cmp(&b.camera));
        v
    }

    pub(super) fn take_dirty_statuses(&self, all: bool) -> (Vec<CameraStatus>, Vec<String>) {
        let mut s = self.statuses();
        let dirty = std::mem::take(&mut s.dirty);
        let removed = std::mem::take(&mut s.removed);
        let out = if all {
            s.latest.values().cloned().collect()
        } else {
            dirty.iter().filter_map(|c| s.latest.get(c).cloned()).collect()
        };
        (out, removed)
    }

    pub(super) fn take_unspooled(&self) -> Vec<(Event, Option<Vec<u8>>)> {
        self.unspooled().drain(..).collect()
    }

    pub(super) async fn woken(&self) {
        self.inner.wake.notified().await
    }

    pub fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    pub fn topics(&self) -> &Topics {
        &self.inner.topics
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.inner.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn statuses(&self) -> std::sync::MutexGuard<'_, Statuses> {
        self.inner.statuses.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unspooled(&self) -> std::sync::MutexGuard<'_, VecDeque<(Event, Option<Vec<u8>>)>> {
        self.inner.unspooled.lock().unwrap_or_else(|p| p.into_inner())
    }
}
