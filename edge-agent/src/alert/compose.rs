//! From what a rule decided to the message a centre receives, in one place
//! whichever rule spoke: the event's id and times, the camera it came from,
//! its snapshot, and the events metric.
//!
//! A camera's stages hand over [`Draft`]s: the rule's own words (kind,
//! phase, score, evidence, parameters, model, what to draw on the
//! snapshot) in rule time. The camera's [`Composer`] keeps each open
//! event's id and start by [`EventKey`], so a start, its updates and its
//! end share one id, and turns rule time into the wall time payloads carry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::event::{self, CameraRef, Evidence, Scores, SnapshotRef};
use super::{snapshot, topics_of, CloseReason, Event, Outbound, Topics};
use crate::config::{Camera, Config, FireKind};
use crate::draw::Canvas;
use crate::infer::ModelInfo;
use crate::metrics::Metrics;
use crate::vocab::{EventKind, FrameInput, Phase, Severity};

/// Which open event a draft belongs to: rules with several events at once
/// key them by lane, by tracked person or by fire region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum EventKey {
    Lane(String),
    Person(u64),
    Region(FireKind, u64),
}

/// What the snapshot shows over the frame: why the rule fired.
pub(crate) type Marks = Box<dyn FnOnce(&mut Canvas) + Send>;

/// An event message as a rule states it, before it has an id or wall times.
pub(crate) struct Draft {
    pub(crate) kind: EventKind,
    pub(crate) key: EventKey,
    pub(crate) phase: Phase,
    /// Rule time the event began (read on `start`).
    pub(crate) since: f64,
    /// Rule time it ended (on `end`).
    pub(crate) ended: Option<f64>,
    pub(crate) severity: Severity,
    pub(crate) zone: Option<String>,
    pub(crate) score: Scores,
    pub(crate) evidence: Evidence,
    /// The rule's parameters as they were when it decided.
    pub(crate) rule: serde_json::Value,
    pub(crate) model: ModelInfo,
    pub(crate) marks: Marks,
}

/// An event between its `start` and `end`.
struct OpenEvent {
    id: String,
    started_at: SystemTime,
}

/// One camera's event messages: identity, snapshot quality and open events.
pub(crate) struct Composer {
    agent: String,
    site: String,
    camera: CameraRef,
    topics: Topics,
    quality: u8,
    /// Ordered, so events that close together close in a stable order
    /// (lanes by name, then people, then fire regions).
    open: BTreeMap<EventKey, OpenEvent>,
    metrics: Arc<Metrics>,
    /// Snapshot encoding, apart from `rules`: a rule's cost and its
    /// picture's cost are different knobs (the rule's parameters versus
    /// `alerts.snapshot_quality` and the frame size).
    snapshot_timer: prometheus::Histogram,
}

impl Composer {
    pub(crate) fn new(config: &Config, camera: &Camera, metrics: Arc<Metrics>) -> Composer {
        Composer {
            agent: config.agent_id.clone(),
            site: config.site.path(),
            camera: CameraRef { id: camera.id.clone(), name: camera.name.clone() },
            topics: topics_of(config),
            quality: config.alerts.snapshot_quality,
            open: BTreeMap::new(),
            snapshot_timer: metrics.stage("snapshot"),
            metrics,
        }
    }

    /// Takes a reloaded config; open events stay open.
    pub(crate) fn reconfigure(&mut self, config: &Config, camera: &Camera) {
        self.quality = config.alerts.snapshot_quality;
        self.camera = CameraRef { id: camera.id.clone(), name: camera.name.clone() };
    }

    /// The event message (with its snapshot of `frame`) for a draft.
    pub(crate) fn compose(&mut self, d: Draft, frame: &FrameInput) -> Outbound {
        let (now, wall) = (frame.t, frame.wall);
        let (id, started_at) = self.open(d.key, d.phase, wall, now, d.since);
        let ended_at = d.ended.map(|e| wall_time_of(wall, now, e));
        let encoding = self.snapshot_timer.start_timer();
        let jpeg = snapshot::render(frame.rgb, frame.width, frame.height, self.quality, d.marks);
        encoding.observe_duration();
        let snapshot_ref = jpeg.as_ref().map(|j| SnapshotRef {
            topic: self.topics.snapshot(d.kind.as_str(), &id),
            content_type: "image/jpeg".into(),
            width: frame.width,
            height: frame.height,
            bytes: j.len(),
        });
        let duration_s = ended_at.unwrap_or(wall).duration_since(started_at).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let event = Event {
            schema: event::SCHEMA.into(),
            id,
            seq: 0,
            kind: d.kind,
            phase: d.phase,
            severity: d.severity,
            agent: self.agent.clone(),
            site: self.site.clone(),
            camera: self.camera.clone(),
            zone: d.zone,
            started_at,
            updated_at: wall,
            ended_at,
            duration_s,
            score: d.score,
            evidence: d.evidence,
            rule: d.rule,
            model: d.model,
            snapshot: snapshot_ref,
            centre: Default::default(),
        };
        self.metrics.events.with_label_values(&[d.kind.as_str(), d.phase.as_str()]).inc();
        Outbound::Event { event: Box::new(event), snapshot: jpeg }
    }

    /// Closes the open events `which` selects (their rule or camera went
    /// away): the alert stage sends each one's `end`, marked with `reason`.
    pub(crate) fn close(&mut self, which: impl Fn(&EventKey) -> bool, reason: CloseReason, out: &mut Vec<Outbound>) {
        let keys: Vec<EventKey> = self.open.keys().filter(|k| which(k)).cloned().collect();
        for key in keys {
            if let Some(o) = self.open.remove(&key) {
                out.push(Outbound::Close { event_id: o.id, reason });
            }
        }
    }

    /// Opens the event on `start`; on `update`/`end` returns the open one,
    /// which goes on `end`. An update or end always follows a start of the
    /// same key; the fallback only guards against a logic error, never
    /// panics.
    fn open(&mut self, key: EventKey, phase: Phase, wall: SystemTime, now: f64, since: f64) -> (String, SystemTime) {
        let open = match phase {
            Phase::Start => OpenEvent { id: event::new_id(), started_at: wall_time_of(wall, now, since) },
            _ => self.open.remove(&key).unwrap_or_else(|| OpenEvent { id: event::new_id(), started_at: wall }),
        };
        let event = (open.id.clone(), open.started_at);
        if phase != Phase::End {
            self.open.insert(key, open);
        }
        event
    }
}

/// The wall time of rule time `t`, given that rule time `now` is `wall`.
fn wall_time_of(wall: SystemTime, now: f64, t: f64) -> SystemTime {
    wall.checked_sub(Duration::from_secs_f64((now - t).max(0.0))).unwrap_or(wall)
}
