//! What an event is, where it is in its life, and how urgent: the
//! payload's `kind`, `type` and `severity`, and the `{kind}` topic level.

use serde::{Deserialize, Serialize};

/// The kind of an event: the topic level and the payload's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Fall,
    Fire,
    Smoke,
    LaneBlocked,
}

impl EventKind {
    /// Every kind an agent raises, in a stable order.
    pub const ALL: [EventKind; 4] = [EventKind::Fall, EventKind::Fire, EventKind::Smoke, EventKind::LaneBlocked];

    /// The topic level and the `kind` field.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Fall => "fall",
            EventKind::Fire => "fire",
            EventKind::Smoke => "smoke",
            EventKind::LaneBlocked => "lane_blocked",
        }
    }

    /// The kind a topic level names; `None` for anything else (a centre
    /// counts and drops what it does not know rather than guessing).
    pub fn from_level(level: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == level)
    }
}

/// Where an event is in its life (the payload's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Start,
    Update,
    End,
    /// Never made by a rule: the agent's hand-over of an unacknowledged
    /// event to the next level up of the site path.
    Escalate,
}

impl Phase {
    /// The payload's `type` and the `phase` label of the events metric.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Update => "update",
            Phase::End => "end",
            Phase::Escalate => "escalate",
        }
    }
}

/// How urgent an event is; ordered, so a config can name a minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// The payload's `severity`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_match_serde_both_ways() {
        for k in EventKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), k);
            assert_eq!(EventKind::from_level(k.as_str()), Some(k));
        }
        for p in [Phase::Start, Phase::Update, Phase::End, Phase::Escalate] {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
            assert_eq!(serde_json::from_str::<Phase>(&json).unwrap(), p);
        }
        assert_eq!(EventKind::from_level("lane-blocked"), None);
        assert!(Severity::Critical > Severity::Warning && Severity::Warning > Severity::Info);
        assert_eq!(serde_json::from_str::<Severity>("\"critical\"").unwrap(), Severity::Critical);
        assert!(serde_json::from_str::<Severity>("\"urgent\"").is_err());
        for s in [Severity::Info, Severity::Warning, Severity::Critical] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        }
    }
}
