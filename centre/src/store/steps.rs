//! The loop on one alert, as the database keeps it: where the alert is
//! (`alerts.state`), and every step taken (`alert_steps`) with who, when,
//! what they said, and which command went to the agent.
//!
//! The order of the loop lives in [`StepKind::allowed`]; a step is stored
//! with a guarded update, so that two operators acting on the same alert
//! at once cannot both move it from the same state.

use std::time::SystemTime;

use super::db::{Stmt, Value};
use super::people::AuditEntry;
use super::{millis, text, AlertRow, Store, StoreError};

/// One step of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Real or false alarm, and why.
    Assess,
    /// To whom, with a note.
    Dispatch,
    /// The handler's report, with an optional photo.
    Handled,
    /// Done.
    Close,
}

impl StepKind {
    pub fn parse(s: &str) -> Option<StepKind> {
        match s {
            "assess" => Some(StepKind::Assess),
            "dispatch" => Some(StepKind::Dispatch),
            "handled" => Some(StepKind::Handled),
            "close" => Some(StepKind::Close),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Assess => "assess",
            StepKind::Dispatch => "dispatch",
            StepKind::Handled => "handled",
            StepKind::Close => "close",
        }
    }

    /// Whether this step may follow an alert in `state` with `verdict`, or
    /// why not. An assessment may be revised until dispatch; only a real
    /// alert is dispatched (again, to change the handler); only a
    /// dispatched one is handled; anything assessed may be closed.
    pub fn allowed(self, state: &str, verdict: Option<&str>) -> Result<(), String> {
        let ok = match self {
            StepKind::Assess => matches!(state, "new" | "assessed"),
            StepKind::Dispatch => matches!(state, "assessed" | "dispatched") && verdict == Some("real"),
            StepKind::Handled => state == "dispatched",
            StepKind::Close => matches!(state, "assessed" | "dispatched" | "handled"),
        };
        if ok {
            return Ok(());
        }
        Err(match (self, state) {
            (_, "closed") => "the alert is closed".into(),
            (StepKind::Dispatch, "assessed" | "dispatched") => "only an alert assessed as real is dispatched".into(),
            (StepKind::Handled, _) => format!("the alert is {state}; only a dispatched alert is handled"),
            (_, "new") => "assess the alert first".into(),
            _ => format!("the alert is {state}; {} is not the next step", self.as_str()),
        })
    }

    /// The alert's state after this step.
    pub fn next_state(self) -> &'static str {
        match self {
            StepKind::Assess => "assessed",
            StepKind::Dispatch => "dispatched",
            StepKind::Handled => "handled",
            StepKind::Close => "closed",
        }
    }

    /// The command the agent is sent: assessing and dispatching
    /// acknowledge the event (its updates slow down, its escalation
    /// stops); closing resolves it (the agent ends it now).
    pub fn command(self) -> Option<&'static str> {
        match self {
            StepKind::Assess | StepKind::Dispatch => Some("ack"),
            StepKind::Handled => None,
            StepKind::Close => Some("resolve"),
        }
    }
}

/// A step as a person takes it.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub verdict: Option<String>,
    pub reason: Option<String>,
    pub handler: Option<String>,
    pub note: Option<String>,
    /// The sha256 of a photo already in the snapshot store.
    pub photo: Option<String>,
}

/// A step as stored, with the agent's reply to its command once it came.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub n: i64,
    pub step: String,
    pub by: String,
    pub at_ms: i64,
    pub verdict: Option<String>,
    pub reason: Option<String>,
    pub handler: Option<String>,
    pub note: Option<String>,
    pub photo: Option<String>,
    pub command: Option<String>,
    pub request_id: Option<String>,
    /// `(ok, error)` of the agent's reply.
    pub reply: Option<(bool, Option<String>)>,
}

impl Store {
    /// Stores `step` on `alert` by `by`, moving the alert on, if it is
    /// still in the state `alert` was read in; [`StoreError::Unchanged`]
    /// when it is not (someone else acted first). `command` is the
    /// command sent to the agent and its request id.
    pub async fn take_step(
        &self,
        alert: &AlertRow,
        kind: StepKind,
        step: &Step,
        by: &str,
        command: Option<(&str, &str)>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let now = millis(SystemTime::now());
        let stmts = vec![
            Stmt::new(
                "UPDATE alerts SET state = $2, verdict = COALESCE($3, verdict), handler = COALESCE($4, handler)
                 WHERE id = $1 AND state = $5 AND COALESCE(verdict, '') = $6",
                vec![
                    alert.id.as_str().into(),
                    kind.next_state().into(),
                    step.verdict.clone().into(),
                    step.handler.clone().into(),
                    alert.state.as_str().into(),
                    alert.verdict.clone().unwrap_or_default().into(),
                ],
            )
            .must_change(),
            Stmt::new(
                "INSERT INTO alert_steps (alert_id, n, step, by_user, at, verdict, reason, handler, note, photo,
                     command, request_id)
                 VALUES ($1, (SELECT COALESCE(MAX(n), 0) + 1 FROM alert_steps WHERE alert_id = $1), $2, $3, $4,
                     $5, $6, $7, $8, $9, $10, $11)",
                vec![
                    alert.id.as_str().into(),
                    kind.as_str().into(),
                    by.into(),
                    now.into(),
                    step.verdict.clone().into(),
                    step.reason.clone().into(),
                    step.handler.clone().into(),
                    step.note.clone().into(),
                    step.photo.clone().into(),
                    command.map(|c| c.0).into(),
                    command.map(|c| c.1).into(),
                ],
            ),
            audit.stmt(),
        ];
        self.db.batch(stmts).await.map(|_| ())
    }

    /// An alert's steps in order, each with its command's reply.
    pub async fn steps(&self, alert_id: &str) -> Result<Vec<StepRow>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT t.n, t.step, t.by_user, t.at, t.verdict, t.reason, t.handler, t.note, t.photo, t.command,
                     t.request_id,
                     (SELECT r.ok FROM replies r WHERE r.request_id = t.request_id ORDER BY r.received_at LIMIT 1),
                     (SELECT r.error FROM replies r WHERE r.request_id = t.request_id ORDER BY r.received_at LIMIT 1)
                 FROM alert_steps t WHERE t.alert_id = $1 ORDER BY t.n",
                vec![alert_id.into()],
            )
            .await?;
        let opt = |v: &Value| v.text().map(str::to_string);
        Ok(rows
            .into_iter()
            .map(|r| StepRow {
                n: r[0].int().unwrap_or(0),
                step: text(&r[1]),
                by: text(&r[2]),
                at_ms: r[3].int().unwrap_or(0),
                verdict: opt(&r[4]),
                reason: opt(&r[5]),
                handler: opt(&r[6]),
                note: opt(&r[7]),
                photo: opt(&r[8]),
                command: opt(&r[9]),
                request_id: opt(&r[10]),
                reply: r[11].int().map(|ok| (ok != 0, opt(&r[12]))),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_goes_in_order() {
        use StepKind::*;
        assert!(Assess.allowed("new", None).is_ok());
        assert!(Assess.allowed("assessed", Some("false_alarm")).is_ok());
        assert_eq!(Dispatch.allowed("new", None).unwrap_err(), "assess the alert first");
        assert!(Dispatch.allowed("assessed", Some("false_alarm")).unwrap_err().contains("assessed as real"));
        assert!(Dispatch.allowed("assessed", Some("real")).is_ok());
        assert!(Handled.allowed("assessed", Some("real")).is_err());
        assert!(Handled.allowed("dispatched", Some("real")).is_ok());
        assert!(Close.allowed("assessed", Some("false_alarm")).is_ok());
        assert!(Close.allowed("handled", Some("real")).is_ok());
        assert_eq!(Close.allowed("closed", Some("real")).unwrap_err(), "the alert is closed");
        assert_eq!(Assess.command(), Some("ack"));
        assert_eq!(Close.command(), Some("resolve"));
        assert_eq!(Handled.command(), None);
    }
}
