//! When an alert's next step is due, and how far up the chain of command
//! it has gone for being late. Pure functions of the alert and the
//! config, so the board, the supervisor task and the tests agree.

use crate::config::Deadline;
use crate::store::AlertRow;

/// The deadline (ms since the epoch) of `alert`'s next step, or `None`
/// when nothing is due (closed).
pub fn due_at(alert: &AlertRow, deadlines: &[Deadline]) -> Option<i64> {
    let d = deadlines.iter().find(|d| d.matches(&alert.kind, &alert.severity))?;
    let seconds = match (alert.state.as_str(), alert.verdict.as_deref()) {
        ("new", _) => d.assess_s,
        ("assessed", Some("real")) => d.dispatch_s,
        ("assessed", _) | ("dispatched", _) | ("handled", _) => d.close_s,
        _ => return None,
    };
    Some(alert.started_at_ms + i64::from(seconds) * 1000)
}

/// The level a late alert belongs on: a community's alert goes to its
/// street when late, and to the district when late by as long again as
/// the step was given. `None` while it is on time.
pub fn escalation(alert: &AlertRow, due_at: i64, now_ms: i64) -> Option<&'static str> {
    if now_ms <= due_at {
        return None;
    }
    let given = (due_at - alert.started_at_ms).max(1000);
    Some(if now_ms > due_at + given { "district" } else { "street" })
}

/// How high a level is, to compare an escalation with the one stored.
pub fn rank(level: Option<&str>) -> u8 {
    match level {
        Some("district") => 2,
        Some("street") => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_deadlines;

    fn alert(kind: &str, severity: &str, state: &str, verdict: Option<&str>) -> AlertRow {
        AlertRow {
            id: "a".into(),
            site: "d/s/c".into(),
            district: "d".into(),
            street: "s".into(),
            community: "c".into(),
            agent: "box".into(),
            camera: "cam".into(),
            camera_name: "Cam".into(),
            kind: kind.into(),
            zone: None,
            severity: severity.into(),
            phase: "start".into(),
            last_seq: 1,
            started_at_ms: 1_000_000,
            updated_at_ms: 1_000_000,
            ended_at_ms: None,
            escalated_to: None,
            state: state.into(),
            verdict: verdict.map(str::to_string),
            handler: None,
            late_at_ms: None,
            snapshot: None,
        }
    }

    #[test]
    fn a_fire_is_due_for_dispatch_two_minutes_after_it_started() {
        let d = default_deadlines();
        assert_eq!(due_at(&alert("fire", "critical", "new", None), &d), Some(1_060_000));
        assert_eq!(due_at(&alert("fire", "critical", "assessed", Some("real")), &d), Some(1_120_000));
        assert_eq!(due_at(&alert("fire", "critical", "assessed", Some("false_alarm")), &d), Some(4_600_000));
        assert_eq!(due_at(&alert("fire", "critical", "closed", Some("real")), &d), None);
        assert_eq!(due_at(&alert("lane_blocked", "warning", "new", None), &d), Some(1_300_000));
        let a = alert("fire", "critical", "new", None);
        assert_eq!(escalation(&a, 1_060_000, 1_060_000), None);
        assert_eq!(escalation(&a, 1_060_000, 1_060_001), Some("street"));
        assert_eq!(escalation(&a, 1_060_000, 1_120_001), Some("district"));
        assert!(rank(Some("district")) > rank(Some("street")) && rank(Some("street")) > rank(None));
    }
}
