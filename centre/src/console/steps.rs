//! The loop's steps, as a person takes them from the console: checked
//! (session, CSRF token, role, scope, the order of the loop, the fields'
//! bounds), stored with who and when, audited, then told to the agent
//! (`ack` or `resolve`) and to every board of the alert's scope.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::board::{alert_json, find, now_ms};
use super::session::{check_acts, check_csrf};
use super::{ApiError, Console};
use crate::access::User;
use crate::live::Change;
use crate::store::{AuditEntry, Step, StepKind, StoreError, CAMERA_OFFLINE};

/// What a step's body may hold; each step reads its own fields.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StepBody {
    verdict: Option<String>,
    reason: Option<String>,
    handler: Option<String>,
    note: Option<String>,
    /// A JPEG, base64.
    photo: Option<String>,
}

pub async fn step(
    State(console): State<Arc<Console>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    user: User,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    check_csrf(&headers, &user)?;
    let kind = StepKind::parse(&step).ok_or(ApiError::NotFound)?;
    check_acts(&user)?;
    let alert = find(&console, &user, &id).await?;
    kind.allowed(&alert.state, alert.verdict.as_deref()).map_err(ApiError::Conflict)?;
    let body: StepBody = if body.is_empty() {
        StepBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("{step}: {e}")))?
    };
    let step = read(kind, body, &console).await?;
    // A camera_offline alert is the centre's own: no agent event to tell.
    let command = if alert.kind == CAMERA_OFFLINE { None } else { kind.command() };
    let request_id = command.map(|_| uuid::Uuid::new_v4().to_string());
    let detail = json!({
        "verdict": step.verdict, "reason": step.reason, "handler": step.handler, "note": step.note,
        "photo": step.photo, "request_id": request_id,
    });
    let audit =
        AuditEntry::new(Some(&user.name), kind.as_str(), Some(&alert.id), Some(detail.to_string())).from(from.ip());
    match console.store.take_step(&alert, kind, &step, &user.name, command.zip(request_id.as_deref()), audit).await {
        Ok(()) => {}
        Err(StoreError::Unchanged(_)) => {
            return Err(ApiError::Conflict("someone else moved this alert on; reload it".into()))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(alert = %alert.id, user = %user.name, step = kind.as_str(), "step taken");
    if let (Some(name), Some(request_id)) = (command, &request_id) {
        let note = step.note.as_deref().or(step.reason.as_deref());
        if let Err(e) = console.commands.send(&alert, name, &user.name, note, request_id).await {
            // Stored and audited; the step shows no reply, which says so.
            tracing::warn!(alert = %alert.id, "cannot send {name} to {}: {e}", alert.agent);
        }
    }
    let _ = console.live.send(Change {
        what: "step",
        id: alert.id.clone(),
        district: alert.district.clone(),
        street: alert.street.clone(),
        community: alert.community.clone(),
    });
    let fresh = find(&console, &user, &alert.id).await?;
    Ok(Json(json!({ "alert": alert_json(&fresh, &console.config.deadlines, now_ms()) })))
}

/// The fields `kind` takes, checked, with a photo stored.
async fn read(kind: StepKind, body: StepBody, console: &Console) -> Result<Step, ApiError> {
    let text = |field: &str, v: Option<String>, max: usize| -> Result<Option<String>, ApiError> {
        match v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
            Some(s) if s.chars().count() > max => {
                Err(ApiError::BadRequest(format!("{field}: at most {max} characters")))
            }
            other => Ok(other),
        }
    };
    let unexpected = |field: &str, present: bool| -> Result<(), ApiError> {
        if present {
            Err(ApiError::BadRequest(format!("{}: takes no {field}", kind.as_str())))
        } else {
            Ok(())
        }
    };
    let mut step = Step { note: text("note", body.note, 500)?, ..Step::default() };
    match kind {
        StepKind::Assess => {
            step.verdict = match body.verdict.as_deref() {
                Some(v @ ("real" | "false_alarm")) => Some(v.to_string()),
                _ => return Err(ApiError::BadRequest("verdict: must be \"real\" or \"false_alarm\"".into())),
            };
            step.reason = text("reason", body.reason, 500)?;
            unexpected("handler", body.handler.is_some())?;
            unexpected("photo", body.photo.is_some())?;
        }
        StepKind::Dispatch => {
            step.handler = text("handler", body.handler, 64)?;
            if step.handler.is_none() {
                return Err(ApiError::BadRequest("handler: who handles it (a person, team or service)".into()));
            }
            unexpected("verdict", body.verdict.is_some())?;
            unexpected("photo", body.photo.is_some())?;
        }
        StepKind::Handled => {
            if let Some(photo) = body.photo.filter(|p| !p.is_empty()) {
                step.photo = Some(store_photo(console, &photo).await?);
            }
            unexpected("verdict", body.verdict.is_some())?;
            unexpected("handler", body.handler.is_some())?;
        }
        StepKind::Close => {
            unexpected("verdict", body.verdict.is_some())?;
            unexpected("handler", body.handler.is_some())?;
            unexpected("photo", body.photo.is_some())?;
        }
    }
    Ok(step)
}

/// A handler's photo joins the content-addressed snapshot store.
async fn store_photo(console: &Console, base64: &str) -> Result<String, ApiError> {
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(base64.trim())
        .map_err(|e| ApiError::BadRequest(format!("photo: not base64: {e}")))?;
    let max = console.config.snapshots.max_snapshot_kib as usize * 1024;
    if jpeg.len() > max {
        return Err(ApiError::BadRequest(format!("photo: {} KiB, at most {} KiB", jpeg.len() / 1024, max / 1024)));
    }
    if !jpeg.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Err(ApiError::BadRequest("photo: not a JPEG".into()));
    }
    let files = console.store.files().clone();
    tokio::task::spawn_blocking(move || files.put(&jpeg))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}
