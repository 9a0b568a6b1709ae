//! The event payload: what a command centre receives on
//! `{root}/{site}/{agent}/events/{kind}`. Its JSON Schema is
//! `deploy/schema/event.schema.json`; a test validates real payloads
//! against it, so the two cannot drift apart.

use std::time::SystemTime;

use serde::Serialize;

use crate::infer::ModelInfo;
use crate::vocab::Phase;
use crate::vocab::{EventKind, Severity};

/// Version of the payload layout. Bump on any incompatible change.
pub const SCHEMA: &str = "alleywatch.event.v1";

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub schema: &'static str,
    /// Globally unique; the same for the start, updates and end of one event.
    pub id: String,
    /// Per-agent, strictly increasing over every message, so a centre can
    /// spot a gap. Assigned by the spool as the message is stored.
    pub seq: u64,
    pub kind: EventKind,
    #[serde(rename = "type")]
    pub phase: Phase,
    pub severity: Severity,
    pub agent: String,
    /// `district/street/community`.
    pub site: String,
    pub camera: CameraRef,
    /// The lane or zone name, when the rule has one.
    pub zone: Option<String>,
    #[serde(with = "crate::vocab::time::rfc3339")]
    pub started_at: SystemTime,
    #[serde(with = "crate::vocab::time::rfc3339")]
    pub updated_at: SystemTime,
    #[serde(with = "crate::vocab::time::rfc3339_opt")]
    pub ended_at: Option<SystemTime>,
    /// Seconds from `started_at` to `ended_at` (or to `updated_at` while open).
    pub duration_s: f64,
    pub score: Scores,
    pub evidence: Evidence,
    /// The rule parameters that fired this event.
    pub rule: serde_json::Value,
    pub model: ModelInfo,
    pub snapshot: Option<SnapshotRef>,
    /// What the command centres did with the event (ack, resolve) and
    /// where it was escalated; absent until something happened.
    #[serde(flatten)]
    pub centre: CentreState,
}

/// The closed loop's marks on an event (see [`super::ledger`]).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CentreState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<Ack>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolved>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
    /// On an `end` the agent forced (camera stopped, rule removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed: Option<super::CloseReason>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ack {
    pub by: String,
    pub note: Option<String>,
    #[serde(with = "crate::vocab::time::rfc3339")]
    pub at: SystemTime,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Resolved {
    pub by: String,
    #[serde(with = "crate::vocab::time::rfc3339")]
    pub at: SystemTime,
}

/// Sent with `type = "escalate"`: the event went unacknowledged, so it is
/// handed to the next level up of the site path.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Escalation {
    /// `street` or `district`.
    pub level: &'static str,
    /// The site path of that level, e.g. `shapingba/fengwen`.
    pub site: String,
    /// 1 for the first escalation (community → street), 2 for the next.
    pub attempt: u32,
    /// Seconds the event had gone unacknowledged.
    pub unacked_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CameraRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scores {
    pub peak: f32,
    pub current: f32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Evidence {
    pub objects: Vec<EvidenceObject>,
    /// Track ids of `objects`, where the rule tracks.
    pub track_ids: Vec<u64>,
    /// Fraction of the lane covered by blocking objects (lane events).
    pub occupancy: Option<f32>,
    /// Per-person keypoints (fall events).
    pub keypoints: Option<serde_json::Value>,
    /// Fire/smoke events: the region's box on each hit frame of the window,
    /// `[x1, y1, x2, y2]` normalised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<[f32; 4]>>,
    /// Fire/smoke events: the window of analysed frames, oldest first:
    /// `{t_offset_s, score}` (score null where the region did not hit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Vec<serde_json::Value>>,
    /// Fire/smoke events: the flicker check's verdict and measurements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flicker: Option<serde_json::Value>,
    /// Lane events: what blocked the lane (`object` or `obstruction`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<crate::analytics::Cause>,
    /// Lane events with the obstruction cue: `{occupancy, light, cells,
    /// considered, changed: [[x1, y1, x2, y2], …]}` (the changed cells).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub obstruction: Option<serde_json::Value>,
    /// Fall events: seconds the person has been down (to `ended_at` for an
    /// `end`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_s: Option<f64>,
    /// Fall events: the person has stayed down `falls.long_lie_s`; the
    /// severity is `critical` from then on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long_lie: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvidenceObject {
    pub label: String,
    pub score: f32,
    /// `[x1, y1, x2, y2]`, normalised to the frame (0–1, origin top-left).
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub track_id: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRef {
    pub topic: String,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
    pub bytes: usize,
}

/// A fresh globally unique event id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A minimal event for unit tests of the alert stage.
#[cfg(test)]
pub(crate) fn sample(id: &str, phase: Phase, severity: Severity) -> Event {
    Event {
        schema: SCHEMA,
        id: id.into(),
        seq: 0,
        kind: EventKind::LaneBlocked,
        phase,
        severity,
        agent: "a".into(),
        site: "d/s/c".into(),
        camera: CameraRef { id: "cam".into(), name: "Cam".into() },
        zone: Some("lane".into()),
        started_at: SystemTime::now(),
        updated_at: SystemTime::now(),
        ended_at: None,
        duration_s: 0.0,
        score: Scores { peak: 1.0, current: 1.0 },
        evidence: Evidence::default(),
        rule: serde_json::Value::Null,
        model: ModelInfo { name: "m".into(), version: "1".into(), format: "nanodet".into() },
        snapshot: None,
        centre: Default::default(),
    }
}
