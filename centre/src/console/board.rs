//! What a user reads: the board of their scope, one alert's detail (its
//! messages in `seq` order, snapshots, steps and the camera's other
//! alerts), a snapshot's bytes, and the live stream that tells the page
//! to refresh. Each asks the store with the user's scope, so nothing
//! outside it is ever read, and an id outside it is simply not found.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

use super::{ApiError, Console};
use crate::access::User;
use crate::config::Deadline;
use crate::store::{millis, AlertRow};
use crate::supervise::deadlines::due_at;

/// The board lists at most this many alerts.
const BOARD_LIMIT: i64 = 500;

/// The JSON of one alert, as the board and the detail show it, with the
/// deadline of its next step and whether that has passed.
pub fn alert_json(a: &AlertRow, deadlines: &[Deadline], now_ms: i64) -> Value {
    let due = due_at(a, deadlines);
    json!({
        "deadline_at": due, "late": due.is_some_and(|d| now_ms > d), "late_at": a.late_at_ms,
        "id": a.id, "site": a.site, "district": a.district, "street": a.street, "community": a.community,
        "agent": a.agent, "camera": a.camera, "camera_name": a.camera_name, "kind": a.kind, "zone": a.zone,
        "severity": a.severity, "phase": a.phase, "state": a.state, "verdict": a.verdict, "handler": a.handler,
        "started_at": a.started_at_ms, "updated_at": a.updated_at_ms, "ended_at": a.ended_at_ms,
        "escalated_to": a.escalated_to, "snapshot": a.snapshot,
    })
}

#[derive(Deserialize)]
pub struct BoardQuery {
    /// `1`: closed alerts too.
    all: Option<String>,
}

pub async fn board(
    State(console): State<Arc<Console>>,
    user: User,
    Query(q): Query<BoardQuery>,
) -> Result<Json<Value>, ApiError> {
    let closed = q.all.as_deref() == Some("1");
    let alerts = console.store.board(&user.scope, closed, BOARD_LIMIT).await?;
    let gaps: Vec<Value> = console
        .store
        .gaps()
        .await?
        .into_iter()
        .filter(|g| user.scope.holds(&g.site))
        .map(|g| json!({"site": g.site, "agent": g.agent, "first": g.first, "last": g.last}))
        .collect();
    let (d, now) = (&console.config.deadlines, now_ms());
    Ok(Json(json!({ "alerts": alerts.iter().map(|a| alert_json(a, d, now)).collect::<Vec<_>>(), "gaps": gaps })))
}

pub async fn detail(
    State(console): State<Arc<Console>>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let alert = find(&console, &user, &id).await?;
    let store = &console.store;
    let messages: Vec<Value> = store
        .timeline(&alert.id)
        .await?
        .into_iter()
        .map(|m| {
            // Stored verbatim after it parsed once, so it parses again.
            let event: Value = serde_json::from_str(&m.payload).unwrap_or(Value::Null);
            json!({"seq": m.seq, "phase": m.phase, "received_at": m.received_at_ms, "event": event})
        })
        .collect();
    let snapshots: Vec<Value> = store
        .snapshots(&alert.id)
        .await?
        .into_iter()
        .map(|s| json!({"sha256": s.sha256, "received_at": s.received_at_ms}))
        .collect();
    let steps: Vec<Value> = store
        .steps(&alert.id)
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "n": s.n, "step": s.step, "by": s.by, "at": s.at_ms, "verdict": s.verdict, "reason": s.reason,
                "handler": s.handler, "note": s.note, "photo": s.photo, "command": s.command,
                "reply": s.reply.map(|(ok, error)| json!({"ok": ok, "error": error})),
            })
        })
        .collect();
    let recent = store.camera_alerts(&user.scope, &alert, 10).await?;
    let (d, now) = (&console.config.deadlines, now_ms());
    Ok(Json(json!({
        "alert": alert_json(&alert, d, now),
        "messages": messages,
        "snapshots": snapshots,
        "steps": steps,
        "camera_recent": recent.iter().map(|a| alert_json(a, d, now)).collect::<Vec<_>>(),
    })))
}

/// The agents and cameras of the user's scope: state, last frame's age,
/// reconnects, version.
pub async fn fleet(State(console): State<Arc<Console>>, user: User) -> Result<Json<Value>, ApiError> {
    let (agents, cameras) = console.store.fleet(&user.scope).await?;
    let now = now_ms();
    let agents: Vec<Value> = agents
        .iter()
        .map(|a| {
            json!({"site": a.site, "agent": a.agent, "state": a.state, "version": a.version,
                   "status_at": a.status_at_ms, "received_at": a.received_at_ms})
        })
        .collect();
    let cameras: Vec<Value> = cameras
        .iter()
        .map(|c| {
            json!({"site": c.site, "agent": c.agent, "camera": c.camera, "name": c.name, "state": c.state,
                   "fps": c.fps, "last_frame_age_s": c.last_frame_at_ms.map(|t| (now - t).max(0) as f64 / 1000.0),
                   "last_error": c.last_error, "reconnects": c.reconnects, "status_at": c.status_at_ms,
                   "failing_since": c.failing_since_ms})
        })
        .collect();
    Ok(Json(json!({ "agents": agents, "cameras": cameras })))
}

/// The alert `id` if it lies in the user's scope.
pub async fn find(console: &Console, user: &User, id: &str) -> Result<AlertRow, ApiError> {
    if id.is_empty() || id.len() > 128 {
        return Err(ApiError::NotFound);
    }
    console.store.alert(&user.scope, id).await?.ok_or(ApiError::NotFound)
}

pub async fn snapshot(
    State(console): State<Arc<Console>>,
    user: User,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    let files = console.store.files();
    // The name is checked before the database or the disk sees it.
    let path = files.path(&sha256).ok_or(ApiError::NotFound)?;
    if !console.store.jpeg_visible(&user.scope, &sha256).await? {
        return Err(ApiError::NotFound);
    }
    let bytes = tokio::fs::read(&path).await.map_err(|_| ApiError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=86400, immutable")], bytes)
        .into_response())
}

/// Server-sent events: `alert` when an agent's message about an alert of
/// the user's scope was stored, `step` when someone took a step on one.
/// The page refetches on each. A stream that fell behind gets one
/// `alert` with an empty object: reload everything.
pub async fn live(
    State(console): State<Arc<Console>>,
    user: User,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let permit = console
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Unavailable("too many live streams; the board still works by reloading"))?;
    let scope = user.scope;
    let stream = BroadcastStream::new(console.live.subscribe()).filter_map(move |change| {
        // The permit lives as long as the stream.
        let _held = &permit;
        match change {
            Ok(c) if scope.contains(&c.district, &c.street, &c.community) => {
                Some(Ok(SseEvent::default().event(c.what).data(json!({"id": c.id}).to_string())))
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(_)) => Some(Ok(SseEvent::default().event("alert").data("{}"))),
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

pub fn now_ms() -> i64 {
    millis(std::time::SystemTime::now())
}
