//! The event payload: what a command centre receives on
//! `{root}/{site}/{agent}/events/{kind}`. The types are the MQTT
//! contract's (`alleywatch_contract::event`), which the centre reads back
//! with; what stays here is how the agent makes ids and test samples.

pub use alleywatch_contract::event::Event;
pub(crate) use alleywatch_contract::event::{
    Ack, CameraRef, Escalation, Evidence, EvidenceObject, Resolved, Scores, SnapshotRef, SCHEMA,
};

#[cfg(test)]
use crate::infer::ModelInfo;
#[cfg(test)]
use crate::vocab::{EventKind, Phase, Severity};
#[cfg(test)]
use std::time::SystemTime;

/// A fresh globally unique event id.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A minimal event for unit tests of the alert stage.
#[cfg(test)]
pub(crate) fn sample(id: &str, phase: Phase, severity: Severity) -> Event {
    Event {
        schema: SCHEMA.into(),
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
