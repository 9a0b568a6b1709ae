//! The event message on `{root}/{site}/{agent}/events/{kind}`: what an
//! agent's rule saw, and what the centres did with it. Agents serialise
//! it; centres read it back with the same types. Its JSON Schema is
//! [`crate::schema::EVENT`], and tests validate real payloads against it.
//!
//! Reading is lenient where the schema lets the agent grow (unknown fields
//! are ignored, optional ones default), so an older centre keeps reading a
//! newer agent's `v1` events.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::kinds::{EventKind, Phase, Severity};

/// Version of the payload layout. Bump on any incompatible change.
pub const SCHEMA: &str = "alleywatch.event.v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// [`SCHEMA`].
    pub schema: String,
    /// Globally unique; the same for the start, updates and end of one event.
    pub id: String,
    /// Per-agent, strictly increasing over every message, so a centre can
    /// spot a gap. Assigned by the agent's spool as the message is stored.
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
    #[serde(with = "crate::time::rfc3339")]
    pub started_at: SystemTime,
    #[serde(with = "crate::time::rfc3339")]
    pub updated_at: SystemTime,
    #[serde(with = "crate::time::rfc3339_opt")]
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

/// The closed loop's marks on an event, as the agent last sent them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CentreState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<Ack>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolved>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
    /// On an `end` the agent forced (camera stopped, rule removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<CloseReason>,
}

/// Why the agent ended an event itself (the event's `closed` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The camera stopped: the agent is shutting down, or the camera was
    /// removed or restarted by a reload.
    CameraStopped,
    /// A reload removed or turned off the rule (lane, falls, fire).
    RuleRemoved,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ack {
    pub by: String,
    pub note: Option<String>,
    #[serde(with = "crate::time::rfc3339")]
    pub at: SystemTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Resolved {
    pub by: String,
    #[serde(with = "crate::time::rfc3339")]
    pub at: SystemTime,
}

/// Sent with `type = "escalate"`: the event went unacknowledged, so it is
/// handed to the next level up of the site path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Escalation {
    /// `street` or `district`.
    pub level: String,
    /// The site path of that level, e.g. `shapingba/fengwen`.
    pub site: String,
    /// 1 for the first escalation (community → street), 2 for the next.
    pub attempt: u32,
    /// Seconds the event had gone unacknowledged.
    pub unacked_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CameraRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Scores {
    pub peak: f32,
    pub current: f32,
}

/// The model that saw it: enough to tell which build of a model raised an
/// event when a camera's alerts are scored later.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModelInfo {
    /// File stem, e.g. `nanodet`.
    pub name: String,
    /// First 12 hex digits of the file's sha256: the version that matters.
    pub version: String,
    pub format: String,
}

/// What made a lane count as blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// A tracked detection of one of the lane's classes.
    Object,
    /// The class-agnostic cue: the lane differs from its clear reference.
    Obstruction,
}

/// The rule's evidence, in the rule's own terms.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<[f32; 4]>>,
    /// Fire/smoke events: the window of analysed frames, oldest first:
    /// `{t_offset_s, score}` (score null where the region did not hit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Vec<serde_json::Value>>,
    /// Fire/smoke events: the flicker check's verdict and measurements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flicker: Option<serde_json::Value>,
    /// Lane events: what blocked the lane (`object` or `obstruction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// Lane events with the obstruction cue: `{occupancy, light, cells,
    /// considered, changed: [[x1, y1, x2, y2], …]}` (the changed cells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obstruction: Option<serde_json::Value>,
    /// Fall events: seconds the person has been down (to `ended_at` for an
    /// `end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_s: Option<f64>,
    /// Fall events: the person has stayed down `falls.long_lie_s`; the
    /// severity is `critical` from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_lie: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvidenceObject {
    pub label: String,
    pub score: f32,
    /// `[x1, y1, x2, y2]`, normalised to the frame (0–1, origin top-left).
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub track_id: Option<u64>,
}

/// Where the event's JPEG went: a retained-free message of its own on
/// `{event topic}/{id}/snapshot`, so the event JSON stays small.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotRef {
    pub topic: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub bytes: usize,
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn lane_end() -> Event {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_284_800_000);
        Event {
            schema: SCHEMA.into(),
            id: "0b9f6c1e-5d7a-4a39-9e1b-2f0c7d3a1b22".into(),
            seq: 41,
            kind: EventKind::LaneBlocked,
            phase: Phase::End,
            severity: Severity::Warning,
            agent: "box-7".into(),
            site: "shapingba/fengwen/xiangxieli".into(),
            camera: CameraRef { id: "cam-1".into(), name: "Lane 4 north".into() },
            zone: Some("fire-escape".into()),
            started_at: t,
            updated_at: t + Duration::from_secs(95),
            ended_at: Some(t + Duration::from_secs(95)),
            duration_s: 95.0,
            score: Scores { peak: 0.91, current: 0.4 },
            evidence: Evidence {
                objects: vec![EvidenceObject { label: "car".into(), score: 0.91, bbox: [0.1, 0.2, 0.5, 0.9], track_id: Some(3) }],
                track_ids: vec![3],
                occupancy: Some(0.42),
                cause: Some(Cause::Object),
                ..Evidence::default()
            },
            rule: serde_json::json!({"name": "lane_dwell", "dwell_s": 60.0}),
            model: ModelInfo { name: "nanodet".into(), version: "0123456789ab".into(), format: "nanodet".into() },
            snapshot: Some(SnapshotRef {
                topic: "aw/shapingba/fengwen/xiangxieli/box-7/events/lane_blocked/0b9f6c1e-5d7a-4a39-9e1b-2f0c7d3a1b22/snapshot".into(),
                content_type: "image/jpeg".into(),
                width: 640,
                height: 360,
                bytes: 31_000,
            }),
            centre: CentreState {
                ack: Some(Ack { by: "op-1".into(), note: None, at: t + Duration::from_secs(20) }),
                closed: Some(CloseReason::RuleRemoved),
                ..CentreState::default()
            },
        }
    }

    #[test]
    fn an_event_matches_its_schema_and_reads_back_the_same() {
        let schema: serde_json::Value = serde_json::from_str(crate::schema::EVENT).unwrap();
        let validator = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
        let json = serde_json::to_value(lane_end()).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(&json).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{errors:#?}\n{json:#}");
        let back: Event = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
        assert_eq!(back.centre.closed, Some(CloseReason::RuleRemoved));
        assert!(json.get("resolved").is_none() && json["evidence"].get("regions").is_none());
    }

    #[test]
    fn a_newer_agents_extra_fields_are_ignored_and_a_wrong_kind_is_refused() {
        let mut json = serde_json::to_value(lane_end()).unwrap();
        json["evidence"]["heat"] = serde_json::json!(0.5);
        json["priority"] = serde_json::json!("p1");
        assert!(serde_json::from_value::<Event>(json.clone()).is_ok());
        json["kind"] = serde_json::json!("flood");
        assert!(serde_json::from_value::<Event>(json).is_err());
    }
}
