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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::ledger::{Ledger, Verdict};
use super::snapshot::{self, Capped};
use super::spool::{Dropped, Pushed, Spool};
use super::{Event, Outbound, Topics};
use crate::metrics::Metrics;
use crate::source::CameraStatus;
use crate::vocab::Phase;

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
    /// Messages the spool could not store (disk full, I/O error), oldest
    /// first, with their seqs: sent from memory (after every older spooled
    /// message, kept until their PUBACK), and stored in the spool ahead of
    /// anything newer once it accepts writes again. Bounded.
    unspooled: Mutex<Fallback>,
    /// `alerts.snapshot_max_kb`, in bytes.
    snapshot_max_bytes: AtomicUsize,
    /// The last [`RECENT`] event messages sent, newest last, for the
    /// technician's page (a summary each, without evidence).
    recent: Mutex<VecDeque<serde_json::Value>>,
}

/// How many recent event messages `/api/events` shows.
pub(crate) const RECENT: usize = 50;

/// Bounds of the in-memory fallback (messages the spool could not store).
/// Over either, `update`s go first (oldest first), then snapshots; a
/// `start`, `end` or `escalate` is never dropped.
pub(crate) const FALLBACK_MAX_MESSAGES: usize = 256;
pub(crate) const FALLBACK_MAX_BYTES: usize = 8 << 20;

/// A message the spool could not store, waiting in memory.
#[derive(Debug, Clone)]
pub(super) struct Unspooled {
    pub(crate) event: Event,
    pub(crate) snapshot: Option<Vec<u8>>,
}

impl Unspooled {
    fn bytes(&self) -> usize {
        // The payload is a few KB; the snapshot is what counts.
        4096 + self.snapshot.as_ref().map_or(0, Vec::len)
    }
}

/// The bounded fallback queue, in seq order.
#[derive(Default)]
pub(super) struct Fallback {
    queue: VecDeque<Unspooled>,
}

impl Fallback {
    fn bytes(&self) -> usize {
        self.queue.iter().map(Unspooled::bytes).sum()
    }

    /// Appends `msg` and drops to fit the bounds: whole updates oldest
    /// first, then snapshots oldest first; never a start, end or escalate
    /// (the queue may then stay over its bounds). Returns what was dropped.
    fn push(&mut self, msg: Unspooled, max_messages: usize, max_bytes: usize) -> Vec<Dropped> {
        self.queue.push_back(msg);
        let mut dropped = Vec::new();
        let mut bytes = self.bytes();
        while self.queue.len() > max_messages || bytes > max_bytes {
            if let Some(i) = self.queue.iter().position(|m| m.event.phase == Phase::Update) {
                let m = self.queue.remove(i).expect("index from position");
                bytes -= m.bytes();
                dropped.push(Dropped::Update { seq: m.event.seq, event_id: m.event.id });
                continue;
            }
            let Some(m) = self.queue.iter_mut().find(|m| m.snapshot.is_some()) else { break };
            bytes -= m.snapshot.take().map_or(0, |s| s.len());
            m.event.snapshot = None;
            dropped.push(Dropped::Snapshot { seq: m.event.seq, event_id: m.event.id.clone() });
        }
        dropped
    }
}
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
        if spool.recovered().is_some() {
            metrics.spool_corrupt.inc();
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
                snapshot_max_bytes: AtomicUsize::new(snapshot::DEFAULT_MAX_BYTES),
                recent: Mutex::default(),
            }),
        }
    }

    /// Sets the snapshot cap (`alerts.snapshot_max_kb`, at start and on
    /// every reload).
    pub(crate) fn set_snapshot_max_bytes(&self, bytes: usize) {
        self.inner.snapshot_max_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Routes one message from analysis or a supervisor.
    pub(crate) fn send(&self, msg: Outbound) {
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
    ///
    /// Its seq comes from the spool's counter, which advances even when the
    /// store fails, so a seq is never used twice. A message the spool
    /// cannot store waits in the bounded fallback queue; while anything
    /// waits there, newer messages wait behind it (each with its own seq),
    /// and every new message first retries storing the waiting ones, in
    /// order, so the spool's drain order stays the seq order.
    pub(crate) fn event(&self, mut event: Event, snapshot: Option<Vec<u8>>) {
        let m = &self.inner.metrics;
        if let Verdict::Suppress(reason) = self.ledger().admit(&mut event, Instant::now()) {
            m.events_suppressed.with_label_values(&[reason]).inc();
            tracing::debug!(id = %event.id, reason, "event message suppressed");
            return;
        }
        let snapshot = snapshot.and_then(|jpeg| self.cap_snapshot(&mut event, jpeg));
        let spool = &self.inner.spool;
        let mut fallback = self.unspooled();
        self.flush(&mut fallback);
        let pushed = if fallback.queue.is_empty() {
            Some(spool.push(&mut event, snapshot.as_deref(), &self.inner.topics))
        } else {
            spool.assign_seq(&mut event);
            None
        };
        self.remember(&event);
        m.last_seq.set(event.seq as i64);
        match pushed {
            Some(Ok(pushed)) => self.report(&pushed),
            Some(Err(e)) => {
                m.spool_errors.inc();
                tracing::error!(error = %e, id = %event.id, seq = event.seq, "cannot spool event; sending it from memory");
                self.hold(&mut fallback, Unspooled { event, snapshot });
            }
            None => self.hold(&mut fallback, Unspooled { event, snapshot }),
        }
        drop(fallback);
        self.inner.wake.notify_one();
    }

    /// Fits the snapshot under `alerts.snapshot_max_kb`, and makes the
    /// event's `snapshot` reference say what is sent.
    fn cap_snapshot(&self, event: &mut Event, jpeg: Vec<u8>) -> Option<Vec<u8>> {
        let max = self.inner.snapshot_max_bytes.load(Ordering::Relaxed);
        if jpeg.len() <= max {
            return Some(jpeg);
        }
        let before = jpeg.len();
        let (fitted, how) = snapshot::cap(jpeg, max);
        self.inner.metrics.snapshots_capped.with_label_values(&[how.as_str()]).inc();
        match fitted {
            Some((jpeg, w, h)) => {
                tracing::warn!(id = %event.id, before, after = jpeg.len(), how = how.as_str(), limit = max, "snapshot over alerts.snapshot_max_kb; shrunk it");
                if let Some(r) = event.snapshot.as_mut() {
                    (r.width, r.height, r.bytes) = (w, h, jpeg.len());
                }
                Some(jpeg)
            }
            None => {
                debug_assert_eq!(how, Capped::Dropped);
                tracing::warn!(id = %event.id, before, limit = max, "snapshot over alerts.snapshot_max_kb even scaled down; the event goes without it");
                event.snapshot = None;
                None
            }
        }
    }

    /// Stores what waits in the fallback, oldest first, until one fails.
    fn flush(&self, fallback: &mut Fallback) {
        while let Some(front) = fallback.queue.front() {
            match self.inner.spool.push_assigned(&front.event, front.snapshot.as_deref(), &self.inner.topics) {
                Ok(pushed) => {
                    tracing::info!(id = %front.event.id, seq = front.event.seq, "spool writable again: stored a message that waited in memory");
                    self.report(&pushed);
                    fallback.queue.pop_front();
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the spool still refuses writes");
                    break;
                }
            }
        }
        self.inner.metrics.spool_fallback_messages.set(fallback.queue.len() as i64);
    }

    fn hold(&self, fallback: &mut Fallback, msg: Unspooled) {
        let m = &self.inner.metrics;
        for d in fallback.push(msg, FALLBACK_MAX_MESSAGES, FALLBACK_MAX_BYTES) {
            let (what, seq, id) = match &d {
                Dropped::Update { seq, event_id } => ("update", seq, event_id),
                Dropped::Snapshot { seq, event_id } => ("snapshot", seq, event_id),
            };
            m.spool_fallback_dropped.with_label_values(&[what]).inc();
            tracing::warn!(what, seq, event = %id, "in-memory fallback full: dropped the oldest {what}");
        }
        m.spool_fallback_messages.set(fallback.queue.len() as i64);
    }

    fn report(&self, pushed: &Pushed) {
        let m = &self.inner.metrics;
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

    /// Retries a spool whose last write failed (blocking: call it off the
    /// async runtime): stores what waits in memory, or, with nothing
    /// waiting, probes with one tiny write. Returns whether it is healthy.
    pub(crate) fn retry_spool(&self) -> bool {
        let mut fallback = self.unspooled();
        if fallback.queue.is_empty() {
            drop(fallback);
            return self.inner.spool.probe();
        }
        self.flush(&mut fallback);
        fallback.queue.is_empty()
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
    pub(crate) fn recent_events(&self) -> Vec<serde_json::Value> {
        self.inner.recent.lock().unwrap_or_else(|p| p.into_inner()).iter().rev().cloned().collect()
    }

    /// Records a camera's latest status for the retained topic and `/api`.
    pub(crate) fn camera_status(&self, status: CameraStatus) {
        let mut s = self.statuses();
        if !s.dirty.contains(&status.camera) {
            s.dirty.push(status.camera.clone());
        }
        s.latest.insert(status.camera.clone(), status);
        drop(s);
        self.inner.wake.notify_one();
    }

    /// Forgets a camera a reload removed; its retained status is cleared.
    pub(crate) fn camera_removed(&self, camera: &str) {
        let mut s = self.statuses();
        s.latest.remove(camera);
        s.dirty.retain(|c| c != camera);
        s.removed.push(camera.to_string());
        drop(s);
        self.inner.wake.notify_one();
    }

    /// Every camera's latest status, by camera id.
    pub(crate) fn camera_statuses(&self) -> Vec<CameraStatus> {
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

    /// Up to `limit` fallback messages with a seq above `after`, oldest
    /// first (copies: each stays until its PUBACK or until it is stored).
    /// `None` when an analysis thread holds the queue (it is writing the
    /// spool, and wakes the publisher when done): the publisher never
    /// waits on a spool write.
    pub(super) fn try_unspooled_after(&self, after: u64, limit: usize) -> Option<Vec<Unspooled>> {
        let q = match self.inner.unspooled.try_lock() {
            Ok(q) => q,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(q.queue.iter().filter(|m| m.event.seq > after).take(limit).cloned().collect())
    }

    /// The broker acknowledged the fallback message with this seq.
    pub(super) fn unspooled_acked(&self, seq: u64) {
        let mut f = self.unspooled();
        f.queue.retain(|m| m.event.seq != seq);
        self.inner.metrics.spool_fallback_messages.set(f.queue.len() as i64);
    }

    /// Messages waiting in memory.
    #[cfg(test)]
    pub(crate) fn unspooled_len(&self) -> usize {
        self.unspooled().queue.len()
    }

    pub(super) async fn woken(&self) {
        self.inner.wake.notified().await
    }

    pub(crate) fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub(crate) fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.inner.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn statuses(&self) -> std::sync::MutexGuard<'_, Statuses> {
        self.inner.statuses.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unspooled(&self) -> std::sync::MutexGuard<'_, Fallback> {
        self.inner.unspooled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::spool::tests::fail_inserts;
    use crate::alert::{topics_of, Ledger};
    use crate::vocab::Severity;

    fn config() -> crate::config::Config {
        crate::config::minimal()
    }

    fn outbox(dir: &std::path::Path) -> Outbox {
        let c = config();
        let spool = Spool::open(&dir.join("s.sqlite"), 1 << 20).unwrap();
        Outbox::new(spool, Ledger::new(&c.alerts, &c.site), topics_of(&c), Arc::new(Metrics::new()))
    }

    fn event(id: &str, phase: Phase) -> Event {
        crate::alert::event::sample(id, phase, Severity::Warning)
    }

    #[test]
    fn seqs_stay_unique_and_in_order_through_a_failing_spool() {
        let dir = tempfile::tempdir().unwrap();
        let o = outbox(dir.path());
        o.event(event("a", Phase::Start), Some(vec![1; 10]));
        fail_inserts(o.spool(), true);
        o.event(event("b", Phase::Start), Some(vec![2; 10]));
        o.event(event("b", Phase::End), None);
        // Waiting in memory, with their own seqs, for the publisher.
        let waiting = o.try_unspooled_after(0, 10).unwrap();
        assert_eq!(waiting.iter().map(|m| m.event.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(o.metrics().spool_errors.get(), 1);
        // One was acknowledged from memory; the spool recovers; the next
        // message first stores what still waits, so drain order = seq order.
        o.unspooled_acked(2);
        fail_inserts(o.spool(), false);
        o.event(event("c", Phase::Start), None);
        let rows: Vec<(u64, String)> =
            o.spool().after(0, 10).unwrap().into_iter().map(|e| (e.seq, e.event_id)).collect();
        assert_eq!(rows, [(1, "a".into()), (3, "b".into()), (4, "c".into())]);
        assert_eq!(o.unspooled_len(), 0);
        let payload: serde_json::Value = serde_json::from_slice(&o.spool().after(1, 1).unwrap()[0].payload).unwrap();
        assert_eq!(payload["seq"], 3, "stored with the seq it was sent with from memory");
        assert_eq!(o.metrics().last_seq.get(), 4);
    }

    #[test]
    fn the_fallback_drops_updates_then_snapshots_never_a_start_or_end() {
        let msg = |phase, snap: usize, seq| {
            let mut event = event("e", phase);
            event.seq = seq;
            event.snapshot = (snap > 0).then(|| crate::alert::event::SnapshotRef {
                topic: "t".into(),
                content_type: "image/jpeg".into(),
                width: 1,
                height: 1,
                bytes: snap,
            });
            Unspooled { event, snapshot: (snap > 0).then(|| vec![0; snap]) }
        };
        let mut f = Fallback::default();
        // Count bound 3, bytes bound large: the oldest update goes first.
        let mut dropped = Vec::new();
        for (i, phase) in [Phase::Start, Phase::Update, Phase::Update, Phase::End, Phase::Start].into_iter().enumerate()
        {
            dropped.extend(f.push(msg(phase, 10_000, i as u64 + 1), 3, 1 << 30));
        }
        assert_eq!(
            dropped,
            [Dropped::Update { seq: 2, event_id: "e".into() }, Dropped::Update { seq: 3, event_id: "e".into() }]
        );
        // Byte bound: snapshots go, oldest first; the messages stay.
        let dropped = f.push(msg(Phase::End, 10_000, 6), 100, 3 * 4096 + 2 * 10_000 + 4096);
        assert!(dropped.iter().all(|d| matches!(d, Dropped::Snapshot { .. })), "{dropped:?}");
        assert_eq!(dropped.len(), 2);
        assert!(f.queue[0].snapshot.is_none() && f.queue[0].event.snapshot.is_none(), "the payload says it has none");
        // Only starts/ends left and over both bounds: all kept.
        let dropped = f.push(msg(Phase::Start, 0, 7), 1, 1);
        let phases: Vec<Phase> = f.queue.iter().map(|m| m.event.phase).collect();
        assert_eq!(phases, [Phase::Start, Phase::End, Phase::Start, Phase::End, Phase::Start]);
        assert!(dropped.iter().all(|d| matches!(d, Dropped::Snapshot { .. })), "{dropped:?}");
        assert_eq!(f.queue.iter().map(|m| m.event.seq).collect::<Vec<_>>(), [1, 4, 5, 6, 7], "in seq order");
    }

    #[test]
    fn snapshot_max_kb_is_bounded_by_the_packet_limit_and_named_when_refused() {
        let text = |kb: u32| {
            format!(
                "agent_id = \"a\"\nsite = {{ district = \"d\", street = \"s\", community = \"c\" }}\nbroker = {{ host = \"h\" }}\ndetector = {{ path = \"/m.onnx\", format = \"nanodet\", input_size = 416 }}\nalerts = {{ snapshot_max_kb = {kb} }}\n[[cameras]]\nid = \"cam\"\nname = \"Cam\"\nurl = \"rtsp://h/s\"\n"
            )
        };
        let parse = |kb| crate::config::Config::parse(&text(kb), std::path::Path::new("t.toml"));
        assert_eq!(parse(256).unwrap().alerts.snapshot_max_kb, 256);
        assert_eq!(config().alerts.snapshot_max_kb, 512, "the documented default");
        for kb in [0, 15, 961, 4096] {
            let e = parse(kb).unwrap_err().to_string();
            assert!(e.contains("alerts.snapshot_max_kb") && e.contains("16–960"), "{e}");
        }
    }

    #[test]
    fn an_oversize_snapshot_is_capped_before_it_is_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let o = outbox(dir.path());
        o.set_snapshot_max_bytes(16 * 1024);
        let (w, h) = (640u32, 480u32);
        let mut x: u32 = 12345;
        let rgb: Vec<u8> = (0..w * h * 3)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        let jpeg = crate::alert::snapshot::render(&rgb, w, h, 95, |_| {}).unwrap();
        assert!(jpeg.len() > 16 * 1024);
        let mut e = event("e", Phase::Start);
        e.snapshot = Some(crate::alert::event::SnapshotRef {
            topic: "t".into(),
            content_type: "image/jpeg".into(),
            width: w,
            height: h,
            bytes: jpeg.len(),
        });
        o.event(e, Some(jpeg));
        let row = &o.spool().after(0, 1).unwrap()[0];
        let stored = row.snapshot.as_ref().map_or(0, |(_, j)| j.len());
        assert!(stored > 0 && stored <= 16 * 1024, "{stored}");
        let payload: serde_json::Value = serde_json::from_slice(&row.payload).unwrap();
        assert_eq!(payload["snapshot"]["bytes"], stored, "the payload describes the JPEG sent");
        let capped = |how| o.metrics().snapshots_capped.with_label_values(&[how]).get();
        assert_eq!(capped("quality") + capped("scaled"), 1);
    }
}
