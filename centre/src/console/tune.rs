//! Tuning a camera from the console: a supervisor changes the camera's
//! rule parameters (a lane's dwell time, thresholds, fall sensitivity),
//! the centre sends `set` to the camera's agent, and the page shows the
//! agent's reply. The agent is the one that decides what may be set (its
//! allow-list, its range checks); the centre bounds what it forwards
//! (keys under the one camera, plain values, a handful at a time) and
//! checks the camera lies in the user's scope.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::session::check_csrf;
use super::{ApiError, Console};
use crate::access::{Role, User};
use crate::store::AuditEntry;

/// Changes in one `set` at most.
const MAX_CHANGES: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneBody {
    site: String,
    agent: String,
    camera: String,
    /// Keys relative to the camera, e.g. `lanes.fire-escape.dwell_s`.
    changes: Map<String, Value>,
}

pub async fn tune(
    State(console): State<Arc<Console>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    user: User,
    headers: HeaderMap,
    body: Result<Json<TuneBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    check_csrf(&headers, &user)?;
    if user.role < Role::Supervisor {
        return Err(ApiError::Forbidden(format!("a {} cannot tune cameras", user.role.as_str())));
    }
    let Json(body) = body.map_err(|e| ApiError::BadRequest(format!("tune: {}", e.body_text())))?;
    if !user.scope.holds(&body.site) || !console.store.camera_known(&body.site, &body.agent, &body.camera).await? {
        return Err(ApiError::NotFound);
    }
    if body.changes.is_empty() || body.changes.len() > MAX_CHANGES {
        return Err(ApiError::BadRequest(format!("changes: 1–{MAX_CHANGES} keys")));
    }
    let mut changes = Map::new();
    for (key, value) in body.changes {
        check_key(&key).map_err(|e| ApiError::BadRequest(format!("changes.{key}: {e}")))?;
        if value.is_object() || value.is_null() {
            return Err(ApiError::BadRequest(format!("changes.{key}: a number, text, true/false or a list")));
        }
        changes.insert(format!("cameras.{}.{key}", body.camera), value);
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let detail = json!({"site": body.site, "agent": body.agent, "changes": changes, "request_id": request_id});
    let target = format!("{}/{}/{}", body.site, body.agent, body.camera);
    console
        .store
        .audit(AuditEntry::new(Some(&user.name), "tune", Some(&target), Some(detail.to_string())).from(from.ip()))
        .await?;
    console
        .commands
        .set(&body.site, &body.agent, changes, &user.name, &request_id)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot send set to {}: {e}", body.agent)))?;
    tracing::info!(user = %user.name, camera = %target, "tuning sent");
    Ok(Json(json!({ "request_id": request_id })))
}

/// The agent's answer to a command this centre sent, once it came:
/// `{"reply": null}` until then.
pub async fn reply(
    State(console): State<Arc<Console>>,
    user: User,
    Path(request_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if request_id.len() > 128 {
        return Err(ApiError::NotFound);
    }
    let reply = console.store.reply(&request_id).await?.filter(|r| user.scope.holds(&r.site));
    Ok(Json(json!({
        "reply": reply.map(|r| json!({"command": r.command, "ok": r.ok, "error": r.error, "at": r.at_ms})),
    })))
}

/// A key below the camera: dotted names, as the command's schema allows.
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 200 {
        return Err("1–200 characters".into());
    }
    let ok = key
        .split('.')
        .all(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
    if ok {
        Ok(())
    } else {
        Err("dotted names of letters, digits, _ and -".into())
    }
}
