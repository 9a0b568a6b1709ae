//! What an event is, where it is in its life, and how urgent.

use serde::Serialize;

/// The kind of an event: the topic level and the payload's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EventKind {
    Fall,
    Fire,
    Smoke,
    LaneBlocked,
}

impl EventKind {
    /// The topic level and the `kind` field.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            EventKind::Fall => "fall",
            EventKind::Fire => "fire",
            EventKind::Smoke => "smoke",
            EventKind::LaneBlocked => "lane_blocked",
        }
    }
}

/// Where an event is in its life (the payload's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    Start,
    Update,
    End,
    /// Never made by a rule: the alert stage's hand-over of an
    /// unacknowledged event to the next level up (see `alert::ledger`).
    Escalate,
}

impl Phase {
    /// The payload's `type` and the `phase` label of the events metric.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Update => "update",
            Phase::End => "end",
            Phase::Escalate => "escalate",
        }
    }
}

/// How urgent an event is; ordered, so a config can name a minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    Info,
    Warning,
    Critical,
}
