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
pub(crate) const SCHEMA: &str = "alleywatch.event.v1";

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub(crate) schema: &'static str,
    /// Globally unique; the same for the start, updates and end of one event.
    pub(crate) id: String,
    /// Per-agent, strictly increasing over every message, so a centre can
    /// spot a gap. Assigned by the spool as the message is stored.
    pub(crate) seq: u64,
    pub(crate) kind: EventKind,
    #[serde(rename = "type")]
    pub(crate) phase: Phase,
    pub(crate) severity: Severity,
    pub(crate) agent: String,
    /// `district/street/community`.
    pub(crate) site: String,
    pub(crate) camera: CameraRef,
    /// The lane or zone name, when the rule has one.
    pub(crate) zone: Option<String>,
    #[serde(with = "crate::vocab::time::rfc3339")]
    pub(crate) started_at: SystemTime,
    #[serde(with = "crate::vocab::time::rfc3339")]
    pub(crate) updated_at: SystemTime,
    #[serde(with = "crate::vocab::time::rfc3339_opt")]
    pub(crate) ended_at: Option<SystemTime>,
    /// Seconds from `started_at` to `ended_at` (or to `updated_at` while open).
    pub(crate) duration_s: f64,
    pub(crate) score: Scores,
    pub(crate) evidence: Evidence,
    /// The rule parameters that fired this event.
    pub(crate) rule: serde_json::Value,
    pub(crate) model: ModelInfo,
    pub(crate) snapshot: Option<SnapshotRef>,
    /// What the command centres did with the event (ack, resolve) and
    /// where it was escalated; absent until something happened.
    #[serde(flatten)]
    pub(crate) centre: CentreState,
}

/// The closed loop's marks on an event (see [`super::ledger`]).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct CentreState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ack: Option<Ack>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) resolved: Option<Resolved>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) escalation: Option<Escalation>,
    /// On an `end` the agent forced (camera stopped, rule removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) closed: Option<super::CloseReason>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Ack {
    pub(crate) by: String,
    pub(crate) note: Option<String>,
    #[serde(with = "crate::vocab::time::rfc3339")]
    pub(crate) at: SystemTime,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Resolved {
    pub(crate) by: String,
    #[serde(with = "crate::vocab::time::rfc3339")]
    pub(crate) at: SystemTime,
}

/// Sent with `type = "escalate"`: the event went unacknowledged, so it is
/// handed to the next level up of the site path.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Escalation {
    /// `street` or `district`.
    pub(crate) level: &'static str,
    /// The site path of that level, e.g. `shapingba/fengwen`.
    pub(crate) site: String,
    /// 1 for the first escalation (community → street), 2 for the next.
    pub(crate) attempt: u32,
    /// Seconds the event had gone unacknowledged.
    pub(crate) unacked_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct CameraRef {
    pub(crate) id: String,
    pub(crate) name: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Scores {
    pub(crate) peak: f32,
    pub(crate) current: f32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Evidence {
    pub(crate) objects: Vec<EvidenceObject>,
    /// Track ids of `objects`, where the rule tracks.
    pub(crate) track_ids: Vec<u64>,
    /// Fraction of the lane covered by blocking objects (lane events).
    pub(crate) occupancy: Option<f32>,
    /// Per-person keypoints (fall events).
    pub(crate) keypoints: Option<serde_json::Value>,
    /// Fire/smoke events: the region's box on each hit frame of the window,
    /// `[x1, y1, x2, y2]` normalised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) regions: Option<Vec<[f32; 4]>>,
    /// Fire/smoke events: the window of analysed frames, oldest first:
    /// `{t_offset_s, score}` (score null where the region did not hit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) window: Option<Vec<serde_json::Value>>,
    /// Fire/smoke events: the flicker check's verdict and measurements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) flicker: Option<serde_json::Value>,
    /// Lane events: what blocked the lane (`object` or `obstruction`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cause: Option<crate::analytics::Cause>,
    /// Lane events with the obstruction cue: `{occupancy, light, cells,
    /// considered, changed: [[x1, y1, x2, y2], …]}` (the changed cells).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) obstruction: Option<serde_json::Value>,
    /// Fall events: seconds the person has been down (to `ended_at` for an
    /// `end`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) down_s: Option<f64>,
    /// Fall events: the person has stayed down `falls.long_lie_s`; the
    /// severity is `critical` from then on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) long_lie: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EvidenceObject {
    pub(crate) label: String,
    pub(crate) score: f32,
    /// `[x1, y1, x2, y2]`, normalised to the frame (0–1, origin top-left).
    #[serde(rename = "box")]
    pub(crate) bbox: [f32; 4],
    pub(crate) track_id: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SnapshotRef {
    pub(crate) topic: String,
    pub(crate) content_type: &'static str,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) bytes: usize,
}

/// A fresh globally unique event id.
pub(crate) fn new_id() -> String {
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
