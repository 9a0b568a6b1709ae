//! The topic layout. An agent builds its topics with [`Topics`]; a centre
//! subscribes with [`Topics::filter`] and reads what arrives with
//! [`Topic::parse`], both from this one description:
//!
//! ```text
//! {root}/{site}/{agent}/status                              retained agent state, will = offline
//! {root}/{site}/{agent}/cameras/{camera}/status             retained camera state
//! {root}/{site}/{agent}/events/{kind}                       event JSON
//! {root}/{site}/{agent}/events/{kind}/{event_id}/snapshot   JPEG
//! {root}/{site}/{agent}/commands/{ack|resolve|set|reference} from a centre
//! {root}/{site}/{agent}/replies                             the agent's answers to commands
//! ```
//!
//! `{site}` is `district/street/community`; `{root}` may have several
//! levels. Every level is [`check_level`]-safe: agents build topics only
//! from validated ids, so a topic that is not is not an agent's.

use crate::kinds::EventKind;

/// Longest topic level, in characters.
pub const MAX_LEVEL_CHARS: usize = 64;

/// Whether `s` may be one topic level: 1–64 characters of letters, digits,
/// `-`, `_` and `.` (no wildcard, separator or control character can slip
/// into a topic). The error says what is wrong, for the caller to prefix
/// with the field's name.
pub fn check_level(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_LEVEL_CHARS {
        return Err(format!("must be at most {MAX_LEVEL_CHARS} characters"));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(format!("{s:?} contains {c:?}; use letters, digits, '-', '_' or '.'"));
    }
    Ok(())
}

/// One agent's topics: everything below `{root}/{site}/{agent}`.
#[derive(Debug, Clone)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// `site` is the `district/street/community` path.
    pub fn new(root: &str, site: &str, agent: &str) -> Topics {
        Topics { base: format!("{root}/{site}/{agent}") }
    }

    /// `{root}/{site}/{agent}`.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn agent_status(&self) -> String {
        format!("{}/status", self.base)
    }

    pub fn camera_status(&self, camera: &str) -> String {
        format!("{}/cameras/{camera}/status", self.base)
    }

    pub fn event(&self, kind: &str) -> String {
        format!("{}/events/{kind}", self.base)
    }

    pub fn snapshot(&self, kind: &str, event_id: &str) -> String {
        format!("{}/events/{kind}/{event_id}/snapshot", self.base)
    }

    /// One command (`ack`, `resolve`, `set`, `reference`), as a centre sends it.
    pub fn command(&self, name: &str) -> String {
        format!("{}/commands/{name}", self.base)
    }

    /// Every command, as the agent subscribes.
    pub fn commands(&self) -> String {
        format!("{}/commands/#", self.base)
    }

    /// Answers to commands.
    pub fn replies(&self) -> String {
        format!("{}/replies", self.base)
    }

    /// A centre's subscription: everything under `site`, which is as deep
    /// as the centre's level (`[district]`, `[district, street]` or all
    /// three).
    pub fn filter(root: &str, site: &[&str]) -> String {
        let mut f = root.to_string();
        for level in site {
            f.push('/');
            f.push_str(level);
        }
        f.push_str("/#");
        f
    }
}

/// A topic a centre received, taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    pub district: &'a str,
    pub street: &'a str,
    pub community: &'a str,
    pub agent: &'a str,
    pub subject: Subject<'a>,
}

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    AgentStatus,
    CameraStatus { camera: &'a str },
    Event { kind: EventKind },
    Snapshot { kind: EventKind, event_id: &'a str },
    Command { name: &'a str },
    Replies,
}

impl<'a> Topic<'a> {
    /// Takes `topic` apart under `root`; `None` for anything that is not
    /// exactly one of the layout's topics with safe levels and a known
    /// event kind (whoever can publish under the root may be hostile).
    pub fn parse(root: &str, topic: &'a str) -> Option<Topic<'a>> {
        let rest = topic.strip_prefix(root)?.strip_prefix('/')?;
        let levels: Vec<&'a str> = rest.split('/').collect();
        if levels.len() > 8 || levels.iter().any(|l| check_level(l).is_err()) {
            return None;
        }
        let (&[district, street, community, agent], tail) = levels.split_first_chunk::<4>()?;
        let kind = |level: &str| EventKind::from_level(level);
        let subject = match *tail {
            ["status"] => Subject::AgentStatus,
            ["cameras", camera, "status"] => Subject::CameraStatus { camera },
            ["events", k] => Subject::Event { kind: kind(k)? },
            ["events", k, event_id, "snapshot"] => Subject::Snapshot { kind: kind(k)?, event_id },
            ["commands", name] => Subject::Command { name },
            ["replies"] => Subject::Replies,
            _ => return None,
        };
        Some(Topic { district, street, community, agent, subject })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_agent_builds_a_centre_takes_apart() {
        let t = Topics::new("aw/city", "shapingba/fengwen/xiangxieli", "box-7");
        fn parse(s: &str) -> Option<Subject<'_>> {
            Topic::parse("aw/city", s).map(|t| t.subject)
        }
        assert_eq!(parse(&t.agent_status()), Some(Subject::AgentStatus));
        assert_eq!(parse(&t.camera_status("cam-1")), Some(Subject::CameraStatus { camera: "cam-1" }));
        assert_eq!(parse(&t.event("fire")), Some(Subject::Event { kind: EventKind::Fire }));
        let id = "0b9f6c1e-5d7a-4a39-9e1b-2f0c7d3a1b22";
        let snap = t.snapshot("lane_blocked", id);
        assert_eq!(parse(&snap), Some(Subject::Snapshot { kind: EventKind::LaneBlocked, event_id: id }));
        assert_eq!(parse(&t.command("ack")), Some(Subject::Command { name: "ack" }));
        assert_eq!(parse(&t.replies()), Some(Subject::Replies));
        let whole = Topic::parse("aw/city", &snap).unwrap();
        assert_eq!(
            (whole.district, whole.street, whole.community, whole.agent),
            ("shapingba", "fengwen", "xiangxieli", "box-7")
        );
        assert_eq!(Topics::filter("aw/city", &["shapingba", "fengwen"]), "aw/city/shapingba/fengwen/#");
        assert_eq!(t.commands(), "aw/city/shapingba/fengwen/xiangxieli/box-7/commands/#");
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "other/d/s/c/a/status",
            "aw/city/d/s/c/a",
            "aw/city/d/s/c/a/events/flood",
            "aw/city/d/s/c/a/events/fire/extra",
            "aw/city/d/s/c/a/status/more",
            "aw/city/d/s/c/a/cameras//status",
            "aw/city/d/s/c/a/cameras/c 1/status",
            "aw/city/d/s/c/a/cameras/+/status",
            "aw/city/d/s/c/a/events/fire/id/snapshot/x/y/z",
            "aw/citylike/d/s/c/a/status",
        ] {
            assert_eq!(Topic::parse("aw/city", bad), None, "{bad}");
        }
        assert!(check_level(&"x".repeat(64)).is_ok());
        assert!(check_level(&"x".repeat(65)).unwrap_err().contains("at most 64"));
        assert!(check_level("a#b").unwrap_err().contains("'#'"));
    }
}
