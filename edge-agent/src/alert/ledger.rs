//! The closed loop with the command centres: which events are open, which a
//! centre has acknowledged or resolved, and which must be escalated.
//!
//! Every event message passes [`Ledger::admit`] on its way to the spool, so
//! the centre's commands shape what is sent next:
//! - `ack`: later `update`s of the event are throttled to one per
//!   `alerts.acked_update_interval_s` (the centre is already on it), except
//!   one that raises the severity;
//! - `resolve`: the agent sends the event's `end` now (with `resolved`), and
//!   drops whatever the rule still says about it;
//! - no ack within `alerts.escalate_after_s` of a `start` whose severity is
//!   at least `alerts.escalate_min_severity`: an `escalate` message names the
//!   next level up of the site path (community → street → district), and
//!   again one level higher after another such wait.
//!
//! Suppressed messages never get a `seq`, so a gap a centre sees is always
//! a message the spool dropped, never one the centre asked to quiet.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use super::event::{Ack, Escalation, Resolved};
use super::{CloseReason, Event};
use crate::config::{Alerts, Site};
use crate::vocab::Phase;
use crate::vocab::Severity;

/// What to do with an event message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Send,
    /// Not sent; the reason is a metric label.
    Suppress(&'static str),
}

/// Longest `ack.note`, in characters: the note rides in every later
/// message of its event.
pub(crate) const MAX_NOTE_CHARS: usize = 500;
/// Longest `by` (who acknowledged or resolved), in characters.
pub(crate) const MAX_BY_CHARS: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum CommandError {
    #[error("{field}: {got} characters, at most {max} (it is copied into every later message of the event)")]
    TooLong { field: &'static str, got: usize, max: usize },
    #[error("no open event {0:?} on this agent")]
    UnknownEvent(String),
    #[error("event {0:?} is already resolved")]
    Resolved(String),
}

struct Open {
    /// The last message sent for it (for `resolve`'s `end` and escalation).
    last: Event,
    opened: Instant,
    last_update: Instant,
    ack: Option<Ack>,
    resolved: bool,
    escalations: u32,
}

pub struct Ledger {
    open: HashMap<String, Open>,
    acked_update_s: f64,
    escalate_after_s: f64,
    escalate_min: Severity,
    site: Site,
}

impl Ledger {
    pub fn new(alerts: &Alerts, site: &Site) -> Ledger {
        let mut l = Ledger {
            open: HashMap::new(),
            acked_update_s: 0.0,
            escalate_after_s: 0.0,
            escalate_min: Severity::Critical,
            site: site.clone(),
        };
        l.reconfigure(alerts, site);
        l
    }

    /// Applies reloaded settings; open events keep their state.
    pub(crate) fn reconfigure(&mut self, alerts: &Alerts, site: &Site) {
        self.acked_update_s = alerts.acked_update_interval_s;
        self.escalate_after_s = alerts.escalate_after_s;
        self.escalate_min = alerts.escalate_min_severity;
        self.site = site.clone();
    }

    /// Decides whether `event` goes out and stamps the centre's marks on it.
    pub(crate) fn admit(&mut self, event: &mut Event, now: Instant) -> Verdict {
        match event.phase {
            Phase::Start => {
                self.open.insert(
                    event.id.clone(),
                    Open {
                        last: event.clone(),
                        opened: now,
                        last_update: now,
                        ack: None,
                        resolved: false,
                        escalations: 0,
                    },
                );
                Verdict::Send
            }
            Phase::Update => {
                let Some(o) = self.open.get_mut(&event.id) else { return Verdict::Send };
                if o.resolved {
                    return Verdict::Suppress("resolved");
                }
                // An update that raises the severity (a fall become a long
                // lie) is news even to a centre already on it.
                let rises = event.severity > o.last.severity;
                if o.ack.is_some() && !rises && now.duration_since(o.last_update).as_secs_f64() < self.acked_update_s {
                    return Verdict::Suppress("acked");
                }
                event.centre.ack = o.ack.clone();
                o.last_update = now;
                o.last = event.clone();
                Verdict::Send
            }
            // The `end` that `resolve` made itself.
            Phase::End if event.centre.resolved.is_some() => Verdict::Send,
            Phase::End => {
                let Some(o) = self.open.remove(&event.id) else { return Verdict::Send };
                if o.resolved {
                    return Verdict::Suppress("resolved");
                }
                event.centre.ack = o.ack;
                Verdict::Send
            }
            Phase::Escalate => Verdict::Send,
        }
    }

    /// `ack {event_id, by, note}`.
    pub(crate) fn ack(&mut self, event_id: &str, by: &str, note: Option<String>) -> Result<(), CommandError> {
        for (field, text, max) in [("by", Some(by), MAX_BY_CHARS), ("note", note.as_deref(), MAX_NOTE_CHARS)] {
            let got = text.map_or(0, |t| t.chars().count());
            if got > max {
                return Err(CommandError::TooLong { field, got, max });
            }
        }
        let o = self.open.get_mut(event_id).ok_or_else(|| CommandError::UnknownEvent(event_id.into()))?;
        if o.resolved {
            return Err(CommandError::Resolved(event_id.into()));
        }
        o.ack = Some(Ack { by: by.into(), note, at: SystemTime::now() });
        Ok(())
    }

    /// `resolve {event_id, by}`: returns the `end` message to send now.
    pub(crate) fn resolve(&mut self, event_id: &str, by: &str) -> Result<Event, CommandError> {
        let got = by.chars().count();
        if got > MAX_BY_CHARS {
            return Err(CommandError::TooLong { field: "by", got, max: MAX_BY_CHARS });
        }
        let o = self.open.get_mut(event_id).ok_or_else(|| CommandError::UnknownEvent(event_id.into()))?;
        if o.resolved {
            return Err(CommandError::Resolved(event_id.into()));
        }
        o.resolved = true;
        let mut end = end_of(o);
        end.centre.resolved = Some(Resolved { by: by.into(), at: end.updated_at });
        Ok(end)
    }

    /// Ends an open event whose rule went away (a lane removed, a camera
    /// stopped): returns its `end`, or `None` if it is not open.
    pub(crate) fn close(&mut self, event_id: &str, reason: CloseReason) -> Option<Event> {
        let o = self.open.remove(event_id)?;
        (!o.resolved).then(|| {
            let mut end = end_of(&o);
            end.centre.closed = Some(reason);
            end
        })
    }

    /// The `escalate` messages due at `now`.
    pub(crate) fn due_escalations(&mut self, now: Instant) -> Vec<Event> {
        let mut due = Vec::new();
        if self.escalate_after_s <= 0.0 {
            return due;
        }
        for o in self.open.values_mut() {
            if o.ack.is_some() || o.resolved || o.last.severity < self.escalate_min || o.escalations >= 2 {
                continue;
            }
            let unacked = now.duration_since(o.opened).as_secs_f64();
            if unacked < self.escalate_after_s * (o.escalations + 1) as f64 {
                continue;
            }
            o.escalations += 1;
            let (level, site) = match o.escalations {
                1 => ("street", format!("{}/{}", self.site.district, self.site.street)),
                _ => ("district", self.site.district.clone()),
            };
            let mut ev = o.last.clone();
            ev.phase = Phase::Escalate;
            ev.updated_at = SystemTime::now();
            ev.snapshot = None;
            ev.centre.escalation =
                Some(Escalation { level: level.into(), site, attempt: o.escalations, unacked_s: unacked });
            due.push(ev);
        }
        due.sort_by_key(|e| e.started_at);
        due
    }
}

/// An `end` built from an open event's last message, ending now.
fn end_of(o: &Open) -> Event {
    let now = SystemTime::now();
    let mut end = o.last.clone();
    end.phase = Phase::End;
    end.updated_at = now;
    end.ended_at = Some(now);
    end.duration_s = now.duration_since(end.started_at).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    end.snapshot = None;
    end.centre.ack = o.ack.clone();
    end.centre.escalation = None;
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn site() -> Site {
        Site { district: "d".into(), street: "s".into(), community: "c".into() }
    }

    fn alerts(escalate_after_s: f64) -> Alerts {
        Alerts { escalate_after_s, acked_update_interval_s: 60.0, ..Alerts::default() }
    }

    fn event(id: &str, phase: Phase, severity: Severity) -> Event {
        crate::alert::event::sample(id, phase, severity)
    }

    #[test]
    fn acked_updates_are_throttled_and_carry_the_ack() {
        let mut l = Ledger::new(&alerts(0.0), &site());
        let t0 = Instant::now();
        assert_eq!(l.admit(&mut event("e", Phase::Start, Severity::Warning), t0), Verdict::Send);
        assert_eq!(l.admit(&mut event("e", Phase::Update, Severity::Warning), t0), Verdict::Send);
        l.ack("e", "op1", Some("on my way".into())).unwrap();
        let mut u = event("e", Phase::Update, Severity::Warning);
        assert_eq!(l.admit(&mut u, t0 + Duration::from_secs(10)), Verdict::Suppress("acked"));
        // A rise in severity (a fall become a long lie) goes out at once…
        let mut rise = event("e", Phase::Update, Severity::Critical);
        assert_eq!(l.admit(&mut rise, t0 + Duration::from_secs(11)), Verdict::Send);
        // …and the throttle holds again for the ones after it.
        let mut u = event("e", Phase::Update, Severity::Critical);
        assert_eq!(l.admit(&mut u, t0 + Duration::from_secs(20)), Verdict::Suppress("acked"));
        assert_eq!(l.admit(&mut u, t0 + Duration::from_secs(72)), Verdict::Send);
        assert_eq!(u.centre.ack.as_ref().map(|a| a.by.as_str()), Some("op1"));
        assert_eq!(l.ack("nope", "op1", None), Err(CommandError::UnknownEvent("nope".into())));
    }

    #[test]
    fn a_long_note_or_by_is_refused_and_changes_nothing() {
        let mut l = Ledger::new(&alerts(0.0), &site());
        let t0 = Instant::now();
        l.admit(&mut event("e", Phase::Start, Severity::Warning), t0);
        let long = "n".repeat(MAX_NOTE_CHARS + 1);
        assert_eq!(
            l.ack("e", "op1", Some(long)),
            Err(CommandError::TooLong { field: "note", got: MAX_NOTE_CHARS + 1, max: MAX_NOTE_CHARS })
        );
        let who = "w".repeat(MAX_BY_CHARS + 1);
        assert!(matches!(l.ack("e", &who, None), Err(CommandError::TooLong { field: "by", .. })));
        assert!(matches!(l.resolve("e", &who), Err(CommandError::TooLong { field: "by", .. })));
        let mut u = event("e", Phase::Update, Severity::Warning);
        assert_eq!(l.admit(&mut u, t0), Verdict::Send);
        assert!(u.centre.ack.is_none(), "a refused ack is not recorded");
        // At the limit it is fine (characters, not bytes).
        l.ack("e", "op1", Some("é".repeat(MAX_NOTE_CHARS))).unwrap();
    }

    #[test]
    fn resolve_ends_the_event_and_silences_the_rule() {
        let mut l = Ledger::new(&alerts(0.0), &site());
        let t0 = Instant::now();
        l.admit(&mut event("e", Phase::Start, Severity::Warning), t0);
        let mut end = l.resolve("e", "op2").unwrap();
        assert_eq!(end.phase, Phase::End);
        assert_eq!(l.admit(&mut end, t0), Verdict::Send);
        assert_eq!(end.centre.resolved.as_ref().map(|r| r.by.as_str()), Some("op2"));
        assert!(end.ended_at.is_some());
        assert_eq!(l.admit(&mut event("e", Phase::Update, Severity::Warning), t0), Verdict::Suppress("resolved"));
        assert_eq!(l.admit(&mut event("e", Phase::End, Severity::Warning), t0), Verdict::Suppress("resolved"));
        assert_eq!(
            l.resolve("e", "op2").unwrap_err(),
            CommandError::UnknownEvent("e".into()),
            "the rule's end closed it"
        );
    }

    #[test]
    fn unacked_events_escalate_street_then_district() {
        let mut l = Ledger::new(&alerts(30.0), &site());
        let t0 = Instant::now();
        l.admit(&mut event("hot", Phase::Start, Severity::Critical), t0);
        l.admit(&mut event("low", Phase::Start, Severity::Info), t0);
        assert!(l.due_escalations(t0 + Duration::from_secs(29)).is_empty());
        let first = l.due_escalations(t0 + Duration::from_secs(31));
        assert_eq!(first.len(), 1, "info is below the default minimum severity");
        let e = first[0].centre.escalation.as_ref().unwrap();
        assert_eq!((e.level.as_str(), e.site.as_str(), e.attempt), ("street", "d/s", 1));
        assert_eq!(first[0].phase, Phase::Escalate);
        assert!(l.due_escalations(t0 + Duration::from_secs(40)).is_empty(), "once per level");
        let second = l.due_escalations(t0 + Duration::from_secs(61));
        assert_eq!(second[0].centre.escalation.as_ref().unwrap().level, "district");
        assert!(l.due_escalations(t0 + Duration::from_secs(600)).is_empty(), "district is the top");

        let mut l = Ledger::new(&alerts(30.0), &site());
        l.admit(&mut event("hot", Phase::Start, Severity::Critical), t0);
        l.ack("hot", "op", None).unwrap();
        assert!(l.due_escalations(t0 + Duration::from_secs(100)).is_empty(), "acked events stay put");
    }

    #[test]
    fn close_ends_an_open_event_once_and_says_why() {
        let mut l = Ledger::new(&alerts(0.0), &site());
        let t0 = Instant::now();
        l.admit(&mut event("e", Phase::Start, Severity::Warning), t0);
        let end = l.close("e", CloseReason::CameraStopped).expect("an end for the open event");
        assert_eq!((end.phase, end.centre.closed), (Phase::End, Some(CloseReason::CameraStopped)));
        assert!(end.ended_at.is_some());
        assert!(l.close("e", CloseReason::CameraStopped).is_none(), "only once");

        l.admit(&mut event("r", Phase::Start, Severity::Warning), t0);
        l.resolve("r", "op").unwrap();
        assert!(l.close("r", CloseReason::RuleRemoved).is_none(), "a resolved event already has its end");
    }
}
