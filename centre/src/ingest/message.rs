//! What one MQTT message is: the topic taken apart by the contract's
//! [`Topic::parse`], the payload read with the contract's types, and the
//! two checked against each other. Anyone who can publish under the root
//! may be hostile, so every refusal has a reason the metrics count, and
//! nothing here can panic or allocate more than the size bound allows.

use alleywatch_contract::event::Event;
use alleywatch_contract::reply::Reply;
use alleywatch_contract::status::{AgentStatus, CameraStatus};
use alleywatch_contract::topics::Subject;
use alleywatch_contract::{check_level, Topic};

/// Where a message came from: the site path and agent of its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub district: String,
    pub street: String,
    pub community: String,
    pub agent: String,
}

impl Origin {
    /// `district/street/community`.
    pub fn site(&self) -> String {
        format!("{}/{}/{}", self.district, self.street, self.community)
    }
}

/// A message the store takes.
#[derive(Debug, Clone)]
pub enum Ingested {
    /// `raw` is the payload as received, kept verbatim.
    Event {
        origin: Origin,
        event: Box<Event>,
        raw: String,
    },
    Snapshot {
        origin: Origin,
        event_id: String,
        jpeg: Vec<u8>,
    },
    AgentStatus {
        origin: Origin,
        status: AgentStatus,
        raw: String,
    },
    CameraStatus {
        origin: Origin,
        status: CameraStatus,
    },
    Reply {
        origin: Origin,
        reply: Reply,
    },
}

impl Ingested {
    /// The alert this message changes, for the live boards: an event
    /// message, or a snapshot (the board shows the newest).
    pub fn change(&self) -> Option<crate::live::Change> {
        let (origin, id) = match self {
            Ingested::Event { origin, event, .. } => (origin, &event.id),
            Ingested::Snapshot { origin, event_id, .. } => (origin, event_id),
            _ => return None,
        };
        Some(crate::live::Change {
            what: "alert",
            id: id.clone(),
            district: origin.district.clone(),
            street: origin.street.clone(),
            community: origin.community.clone(),
        })
    }

    /// The `subject` label of the messages metric.
    pub fn subject(&self) -> &'static str {
        match self {
            Ingested::Event { .. } => "event",
            Ingested::Snapshot { .. } => "snapshot",
            Ingested::AgentStatus { .. } => "agent_status",
            Ingested::CameraStatus { .. } => "camera_status",
            Ingested::Reply { .. } => "reply",
        }
    }
}

/// Why a message was not stored; [`Refused::reason`] is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a topic of the contract under this centre's site")]
    Topic,
    #[error("a command (the centres' own traffic), not stored")]
    Command,
    #[error("empty payload (a cleared retained message)")]
    Empty,
    #[error("{0} bytes is over the limit of {1}")]
    TooLarge(usize, usize),
    #[error("payload does not match the contract: {0}")]
    Json(String),
    #[error("payload disagrees with its topic: {0}")]
    Mismatch(&'static str),
    #[error("snapshot is not a JPEG")]
    NotJpeg,
}

impl Refused {
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Topic => "topic",
            Refused::Command => "command",
            Refused::Empty => "empty",
            Refused::TooLarge(..) => "too_large",
            Refused::Json(_) => "json",
            Refused::Mismatch(_) => "mismatch",
            Refused::NotJpeg => "not_jpeg",
        }
    }
}

/// The limits a message is read under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_json: usize,
    pub max_snapshot: usize,
}

/// Reads one message. `site` is the centre's own site levels: a topic
/// outside them is refused even if the broker delivered it.
pub fn classify(root: &str, site: &[&str], topic: &str, payload: &[u8], limits: Limits) -> Result<Ingested, Refused> {
    let t = Topic::parse(root, topic).ok_or(Refused::Topic)?;
    let levels = [t.district, t.street, t.community];
    if site.iter().zip(levels).any(|(want, got)| *want != got) {
        return Err(Refused::Topic);
    }
    let origin = Origin {
        district: t.district.into(),
        street: t.street.into(),
        community: t.community.into(),
        agent: t.agent.into(),
    };
    if let Subject::Command { .. } = t.subject {
        return Err(Refused::Command);
    }
    if payload.is_empty() {
        return Err(Refused::Empty);
    }
    let limit = if matches!(t.subject, Subject::Snapshot { .. }) { limits.max_snapshot } else { limits.max_json };
    if payload.len() > limit {
        return Err(Refused::TooLarge(payload.len(), limit));
    }
    match t.subject {
        Subject::Event { kind } => {
            let raw = std::str::from_utf8(payload).map_err(|_| Refused::Json("not UTF-8".into()))?;
            let event: Event = json(raw)?;
            if event.kind != kind {
                return Err(Refused::Mismatch("kind"));
            }
            check_origin(&origin, &event.agent, &event.site)?;
            check_level(&event.id).map_err(|_| Refused::Mismatch("id"))?;
            check_level(&event.camera.id).map_err(|_| Refused::Mismatch("camera.id"))?;
            if event.seq > i64::MAX as u64 {
                return Err(Refused::Json("seq out of range".into()));
            }
            Ok(Ingested::Event { origin, event: Box::new(event), raw: raw.to_string() })
        }
        Subject::Snapshot { event_id, .. } => {
            if !payload.starts_with(&[0xFF, 0xD8, 0xFF]) {
                return Err(Refused::NotJpeg);
            }
            Ok(Ingested::Snapshot { origin, event_id: event_id.into(), jpeg: payload.to_vec() })
        }
        Subject::AgentStatus => {
            let raw = std::str::from_utf8(payload).map_err(|_| Refused::Json("not UTF-8".into()))?;
            let status: AgentStatus = json(raw)?;
            check_origin(&origin, &status.agent, &status.site)?;
            Ok(Ingested::AgentStatus { origin, status, raw: raw.to_string() })
        }
        Subject::CameraStatus { camera } => {
            let status: CameraStatus =
                json(std::str::from_utf8(payload).map_err(|_| Refused::Json("not UTF-8".into()))?)?;
            if status.camera != camera {
                return Err(Refused::Mismatch("camera"));
            }
            Ok(Ingested::CameraStatus { origin, status })
        }
        Subject::Replies => {
            let reply: Reply = json(std::str::from_utf8(payload).map_err(|_| Refused::Json("not UTF-8".into()))?)?;
            Ok(Ingested::Reply { origin, reply })
        }
        Subject::Command { .. } => Err(Refused::Command),
    }
}

fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Refused> {
    serde_json::from_str(text).map_err(|e| {
        let mut msg = e.to_string();
        msg.truncate(200);
        Refused::Json(msg)
    })
}

fn check_origin(origin: &Origin, agent: &str, site: &str) -> Result<(), Refused> {
    if agent != origin.agent {
        return Err(Refused::Mismatch("agent"));
    }
    if site != origin.site() {
        return Err(Refused::Mismatch("site"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_json: 4096, max_snapshot: 4096 };
    const BASE: &str = "aw/d1/s1/c1/box-1";

    fn read(topic: &str, payload: &[u8]) -> Result<Ingested, Refused> {
        classify("aw", &["d1", "s1"], topic, payload, LIMITS)
    }

    fn reason(topic: &str, payload: &[u8]) -> &'static str {
        read(topic, payload).unwrap_err().reason()
    }

    #[test]
    fn hostile_messages_are_refused_with_a_reason() {
        let status = format!("{BASE}/status");
        assert_eq!(reason("aw/d1/s2/c1/box-1/status", b"{}"), "topic", "another street");
        assert_eq!(reason("aw/d1/s1/c1/box-1/nonsense", b"{}"), "topic");
        assert_eq!(reason(&format!("{BASE}/commands/ack"), b"{}"), "command");
        assert_eq!(reason(&status, b""), "empty");
        assert_eq!(reason(&status, &[b' '; 5000]), "too_large");
        assert_eq!(reason(&status, b"{not json"), "json");
        assert_eq!(reason(&status, &[0xC3, 0x28]), "json");
        let other = r#"{"state":"online","agent":"box-2","site":"d1/s1/c1","version":"1","cameras":[],"at":"2026-12-03T10:00:00.000Z"}"#;
        assert_eq!(reason(&status, other.as_bytes()), "mismatch");
        assert!(matches!(read(&status, other.replace("box-2", "box-1").as_bytes()), Ok(Ingested::AgentStatus { .. })));
        let snap = format!("{BASE}/events/fire/e-1/snapshot");
        assert_eq!(reason(&snap, b"GIF89a"), "not_jpeg");
        assert!(matches!(read(&snap, &[0xFF, 0xD8, 0xFF, 0xE0]), Ok(Ingested::Snapshot { .. })));
        assert_eq!(reason(&format!("{BASE}/events/fire"), br#"{"schema":"x"}"#), "json");
    }
}
