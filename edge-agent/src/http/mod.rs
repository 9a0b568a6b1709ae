//! The agent's HTTP listener, beside the data path: Prometheus metrics,
//! liveness and readiness, and what each camera is doing and seeing.
//!
//! | path | what |
//! |---|---|
//! | `/` | the technician's page ([`technician`]) |
//! | `/metrics` | Prometheus text format |
//! | `/healthz` | 200 while the process serves requests (liveness) |
//! | `/readyz` | 200 once models are loaded and the broker is connected or the spool accepts writes; 503 otherwise |
//! | `/api/cameras` | every camera's status, JSON (credentials removed) |
//! | `/api/cameras/{id}/snapshot.jpg` | the camera's latest analysed frame |
//! | `/api/cameras/{id}/lanes` | POST: save a lane drawn on the page |
//! | `/api/config` | the running rule settings (no URLs or secrets) |
//! | `/api/events` | the last event messages sent |
//!
//! One small stack (axum on hyper, on the agent's tokio runtime). It binds
//! to loopback unless `http.bind` says otherwise; bound elsewhere it needs a
//! token ([`auth`]). Handlers only read shared state or hand a change to the
//! reload path; none of them can stall a camera.

pub mod auth;
pub mod technician;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::alert::{Outbox, Request};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http.bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// `http.token_file` unreadable or empty (the message names it).
    #[error("{0}")]
    Token(String),
}

/// The latest frame of one camera, kept for viewers (copied at most once a
/// second by its analysis thread into a reused buffer).
#[derive(Default)]
pub struct LatestFrame {
    pub name: String,
    frame: Mutex<Option<Viewed>>,
}

/// Packed RGB, width, height, and when it was captured.
type Viewed = (Vec<u8>, u32, u32, SystemTime);

impl LatestFrame {
    pub fn new(name: &str) -> LatestFrame {
        LatestFrame { name: name.to_string(), frame: Mutex::new(None) }
    }

    /// Copies `rgb` in, reusing the buffer.
    pub fn store(&self, rgb: &[u8], width: u32, height: u32, at: SystemTime) {
        let mut f = self.frame.lock().unwrap_or_else(|p| p.into_inner());
        match f.as_mut() {
            Some((buf, w, h, t)) => {
                buf.clear();
                buf.extend_from_slice(rgb);
                (*w, *h, *t) = (width, height, at);
            }
            None => *f = Some((rgb.to_vec(), width, height, at)),
        }
    }

    fn jpeg(&self, quality: u8) -> Option<Vec<u8>> {
        let f = self.frame.lock().unwrap_or_else(|p| p.into_inner());
        let (buf, w, h, _) = f.as_ref()?;
        crate::alert::snapshot::render(buf, *w, *h, quality, |_| {})
    }
}

/// Camera id → its latest frame; the pipeline adds and removes cameras.
pub type Frames = Arc<Mutex<HashMap<String, Arc<LatestFrame>>>>;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub outbox: Outbox,
    pub frames: Frames,
    pub quality: u8,
    /// The running configuration, replaced by every reload.
    pub config: tokio::sync::watch::Receiver<Arc<Config>>,
    /// Where a lane saved on the page, or "the lane is clear now", goes:
    /// the pipeline's manager.
    pub requests: tokio::sync::mpsc::Sender<Request>,
    /// `http.token`, when one is configured.
    pub token: Option<Arc<str>>,
}

pub fn router(state: HttpState) -> Router {
    let guarded = Router::new()
        .route("/", get(technician::page))
        .route("/metrics", get(metrics))
        .route("/api/cameras", get(cameras))
        .route("/api/cameras/{id}/snapshot.jpg", get(snapshot))
        .route("/api/cameras/{id}/lanes", post(technician::save_lane))
        .route("/api/cameras/{id}/reference", post(technician::set_reference))
        .route("/api/cameras/{id}/lanes/{lane}/reference", post(technician::set_lane_reference))
        .route("/api/config", get(technician::config))
        .route("/api/events", get(technician::events))
        .route_layer(axum::middleware::from_fn_with_state(state.token.clone(), auth::require));
    // Liveness and readiness stay open: probes carry no token, and they
    // reveal nothing.
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .with_state(state)
}

/// Binds now (so a bad address fails the start with a clear error) and
/// serves until `shutdown`.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, HttpError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })
}

pub async fn serve(listener: tokio::net::TcpListener, state: HttpState, shutdown: Shutdown) {
    let app = router(state);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.wait().await }).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

async fn metrics(State(s): State<HttpState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

async fn readyz(State(s): State<HttpState>) -> Response {
    let models = s.metrics.models_loaded.get() == 1;
    let broker = s.metrics.mqtt_connected.get() == 1;
    let outbox = s.outbox.clone();
    let spool = tokio::task::spawn_blocking(move || outbox.spool().healthy()).await.unwrap_or(false);
    let ready = models && (broker || spool);
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({ "ready": ready, "models_loaded": models, "broker_connected": broker, "spool_ok": spool })))
        .into_response()
}

async fn cameras(State(s): State<HttpState>) -> Response {
    let statuses = s.outbox.camera_statuses();
    let frames = s.frames.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut out: Vec<serde_json::Value> = Vec::new();
    let mut ids: Vec<&String> = frames.keys().collect();
    ids.sort();
    for id in ids {
        match statuses.iter().find(|st| &st.camera == id) {
            Some(st) => out.push(serde_json::to_value(st).unwrap_or_default()),
            None => out.push(json!({ "camera": id, "name": frames[id].name, "state": "starting" })),
        }
    }
    Json(out).into_response()
}

async fn snapshot(State(s): State<HttpState>, Path(id): Path<String>) -> Response {
    let frame = s.frames.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned();
    let Some(frame) = frame else {
        return (StatusCode::NOT_FOUND, format!("no camera {id:?}\n")).into_response();
    };
    let quality = s.quality;
    match tokio::task::spawn_blocking(move || frame.jpeg(quality)).await.ok().flatten() {
        Some(jpeg) => ([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response(),
        None => (StatusCode::NOT_FOUND, format!("camera {id:?} has no frame yet\n")).into_response(),
    }
}
