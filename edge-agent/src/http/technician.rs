//! The technician's page: cameras and their status, each camera's latest
//! frame with its lanes drawn, a way to click out a new lane and save it,
//! and a read-only view of the thresholds and recent events.
//!
//! The page is one static HTML file with a little plain JavaScript
//! (`technician.html`, `technician.js`, `technician.css`), served from the
//! binary: no front-end build, nothing fetched from elsewhere, nothing
//! inline (the Content-Security-Policy forbids inline script and style). It
//! reads `/api/cameras`, `/api/config` and `/api/events`. Saving a lane posts to `/api/cameras/{id}/lanes`, which
//! becomes a `set` of `cameras.{id}.lanes.{name}.*` — the same validated
//! path as a centre's `set` command and a hot reload: the overlay file
//! keeps it, a bad polygon is rejected with the key that is wrong, and no
//! stream restarts.
//!
//! "The lane is clear now" posts to `/api/cameras/{id}/lanes/{lane}/reference`
//! (or `/api/cameras/{id}/reference` for every lane with the obstruction
//! cue), the same request as a centre's `reference` command.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use super::HttpState;
use crate::config::FireKind;
use crate::control::{Change, Request};

const PAGE: &str = include_str!("technician.html");
/// The page's script and style, served as files (not inline) so the page's
/// Content-Security-Policy allows scripts and styles from this agent only.
const SCRIPT: &str = include_str!("technician.js");
const STYLE: &str = include_str!("technician.css");

pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    // Small and changes with the binary: never cache it.
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// The running configuration's operator-facing parts (no URLs, no
/// credentials, no file paths): what a technician checks on the box.
pub(crate) async fn config(State(s): State<HttpState>) -> Response {
    let c = s.config.borrow().clone();
    let cameras: Vec<Value> = c
        .cameras
        .iter()
        .map(|cam| {
            json!({
                "id": cam.id,
                "name": cam.name,
                "fps": cam.fps,
                "analysis_width": cam.analysis_width,
                "decode": cam.decode,
                "lanes": cam.lanes,
                "falls": c.falls_for(cam),
                "fire": cam.fire && c.fire.is_some(),
            })
        })
        .collect();
    let fire = c.fire.as_ref().map(|f| {
        json!({
            "fps": f.fps,
            "fire": f.rule(FireKind::Fire),
            "smoke": f.rule(FireKind::Smoke),
            "flicker": f.flicker,
        })
    });
    Json(json!({
        "agent_id": c.agent_id,
        "site": c.site.path(),
        "detector": {
            "score_threshold": c.detector.score_threshold,
            "fps": c.detector.fps,
            "labels": c.labels(),
            "motion_gate": c.detector.motion_gate,
            "precision": c.detector.precision,
            "execution_provider": c.detector.execution_provider,
            "sessions": c.detector.sessions,
            "threads": c.detector.threads,
            "batch": c.detector.batch(),
        },
        "alerts": {
            "update_interval_s": c.alerts.update_interval_s,
            "acked_update_interval_s": c.alerts.acked_update_interval_s,
            "escalate_after_s": c.alerts.escalate_after_s,
            "escalate_min_severity": c.alerts.escalate_min_severity,
        },
        "fire": fire,
        "cameras": cameras,
    }))
    .into_response()
}

pub(crate) async fn events(State(s): State<HttpState>) -> Response {
    Json(s.outbox.recent_events()).into_response()
}

/// A lane drawn on the page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LaneForm {
    name: String,
    polygon: Vec<[f64; 2]>,
    classes: Vec<String>,
    dwell_s: f64,
    clear_s: Option<f64>,
    /// `objects`, `obstruction` or `both`; kept as it is when absent.
    cue: Option<String>,
    min_occupancy: Option<f64>,
}

/// Saves a lane (new, or replacing the one with that name) through the
/// validated `set` path. 200 with the applied keys, or 400 with the error.
pub(crate) async fn save_lane(
    State(s): State<HttpState>,
    Path(camera): Path<String>,
    Json(form): Json<LaneForm>,
) -> Response {
    let bad = |m: String| (StatusCode::BAD_REQUEST, Json(json!({ "ok": false, "error": m }))).into_response();
    if form.name.is_empty() || form.name.contains('.') {
        return bad("name: must not be empty or contain '.'".into());
    }
    if camera.contains('.') {
        // Remote changes address cameras by dotted key paths.
        return bad(format!("camera {camera:?}: an id with '.' cannot be changed from here; edit the config file"));
    }
    if !s.config.borrow().cameras.iter().any(|c| c.id == camera) {
        return (StatusCode::NOT_FOUND, Json(json!({ "ok": false, "error": format!("no camera {camera:?}") })))
            .into_response();
    }
    let key = |k: &str| format!("cameras.{camera}.lanes.{}.{k}", form.name);
    let mut changes = Map::new();
    changes.insert(key("polygon"), json!(form.polygon));
    changes.insert(key("classes"), json!(form.classes));
    changes.insert(key("dwell_s"), json!(form.dwell_s));
    if let Some(c) = form.clear_s {
        changes.insert(key("clear_s"), json!(c));
    }
    if let Some(c) = form.cue {
        changes.insert(key("cue"), json!(c));
    }
    if let Some(m) = form.min_occupancy {
        changes.insert(key("min_occupancy"), json!(m));
    }
    let keys: Vec<String> = changes.keys().cloned().collect();
    ask(&s, Change::Set(changes), json!({ "ok": true, "keys": keys })).await
}

/// "Every lane of this camera that uses the obstruction cue is clear now."
pub(crate) async fn set_reference(State(s): State<HttpState>, Path(camera): Path<String>) -> Response {
    ask(&s, Change::Reference { camera: camera.clone(), lane: None }, json!({ "ok": true, "camera": camera })).await
}

/// "This lane is clear now": the camera's next analysed frame becomes the lane's
/// clear reference (for the light of that frame), in use and saved at once.
pub(crate) async fn set_lane_reference(
    State(s): State<HttpState>,
    Path((camera, lane)): Path<(String, String)>,
) -> Response {
    let done = json!({ "ok": true, "camera": camera, "lane": lane });
    ask(&s, Change::Reference { camera, lane: Some(lane) }, done).await
}

/// Hands `change` to the manager; 200 with `done`, 400 with its error.
async fn ask(s: &HttpState, change: Change, done: Value) -> Response {
    let unavailable =
        |m: &str| (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ok": false, "error": m }))).into_response();
    let (reply, answer) = oneshot::channel();
    match s.requests.try_send(Request { change, by: "technician page".into(), reply }) {
        Ok(()) => {}
        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
            return unavailable("busy: too many changes are queued; try again in a moment")
        }
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return unavailable("the agent is stopping"),
    }
    match tokio::time::timeout(std::time::Duration::from_secs(30), answer).await {
        Ok(Ok(Ok(()))) => Json(done).into_response(),
        Ok(Ok(Err(e))) => (StatusCode::BAD_REQUEST, Json(json!({ "ok": false, "error": e }))).into_response(),
        Ok(Err(_)) | Err(_) => unavailable("no answer from the agent"),
    }
}
