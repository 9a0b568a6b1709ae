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
//! One small stack (hyper, with axum's router, on the agent's tokio
//! runtime). It binds to loopback unless `http.bind` says otherwise; bound
//! elsewhere it needs a token ([`auth`]): a read token for views, a change
//! token for changes. Every change must come from this page or from no
//! browser ([`auth::same_origin`]), and every response forbids framing
//! ([`SECURITY_HEADERS`]). The listener closes sockets that send no request
//! head in time and holds at most `http.max_connections` ([`server`]).
//! Handlers only read shared state or hand a change to the reload path;
//! none of them can stall a camera.

pub mod auth;
mod server;
pub(crate) mod technician;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::alert::Outbox;
use crate::config::Config;
use crate::control::Request;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

pub(crate) use server::Limits;

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
///
/// Two locks, so a viewer never stalls analysis: `frame`, which the
/// analysis thread takes to store, is held only to copy an `Arc` out
/// ([`LatestFrame::current`]); the JPEG is encoded outside it, under
/// `encoded`, which only viewers take and which keeps one JPEG a second.
#[derive(Default)]
pub struct LatestFrame {
    pub(crate) name: String,
    frame: Mutex<Option<Viewed>>,
    encoded: Mutex<Option<(Instant, Bytes)>>,
}

/// Packed RGB (shared with an encode in progress), width, height, and when
/// it was captured.
#[derive(Clone)]
struct Viewed {
    rgb: Arc<Vec<u8>>,
    width: u32,
    height: u32,
    _at: SystemTime,
}

/// How long one encoded snapshot serves every viewer of the camera.
const ENCODE_EVERY: Duration = Duration::from_secs(1);

impl LatestFrame {
    pub fn new(name: &str) -> LatestFrame {
        LatestFrame { name: name.to_string(), ..Default::default() }
    }

    /// Copies `rgb` in, reusing the buffer unless an encode still reads it.
    pub fn store(&self, rgb: &[u8], width: u32, height: u32, at: SystemTime) {
        let mut f = self.frame.lock().unwrap_or_else(|p| p.into_inner());
        match f.as_mut() {
            Some(v) => {
                match Arc::get_mut(&mut v.rgb) {
                    Some(buf) => {
                        buf.clear();
                        buf.extend_from_slice(rgb);
                    }
                    None => v.rgb = Arc::new(rgb.to_vec()),
                }
                (v.width, v.height, v._at) = (width, height, at);
            }
            None => *f = Some(Viewed { rgb: Arc::new(rgb.to_vec()), width, height, _at: at }),
        }
    }

    /// The frame as it is now. All that happens under the frame lock: an
    /// `Arc` clone, no copy of the pixels and no encode.
    fn current(&self) -> Option<Viewed> {
        self.frame.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The JPEG for viewers at `now`: the one encoded less than
    /// [`ENCODE_EVERY`] ago, or a new one by `encode` (run outside the
    /// frame lock). Also says whether this call encoded.
    fn jpeg(&self, now: Instant, encode: impl FnOnce(&[u8], u32, u32) -> Option<Vec<u8>>) -> Option<(Bytes, bool)> {
        let mut cache = self.encoded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, jpeg)) = cache.as_ref() {
            if now.saturating_duration_since(*at) < ENCODE_EVERY {
                return Some((jpeg.clone(), false));
            }
        }
        let v = self.current()?;
        let jpeg = Bytes::from(encode(&v.rgb, v.width, v.height)?);
        *cache = Some((now, jpeg.clone()));
        Some((jpeg, true))
    }
}

/// Camera id → its latest frame; the pipeline adds and removes cameras.
pub(crate) type Frames = Arc<Mutex<HashMap<String, Arc<LatestFrame>>>>;

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
    /// `http.token` and `http.change_token`, when configured.
    pub tokens: auth::Tokens,
}

/// On every response the router makes: no framing (clickjacking), scripts,
/// styles, images and fetches from this agent only and nothing inline, no
/// type sniffing, no `Referer` carrying a path elsewhere.
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

pub fn router(state: HttpState) -> Router {
    let guarded = Router::new()
        .route("/", get(technician::page))
        .route("/technician.js", get(technician::script))
        .route("/technician.css", get(technician::style))
        .route("/metrics", get(metrics))
        .route("/api/cameras", get(cameras))
        .route("/api/cameras/{id}/snapshot.jpg", get(snapshot))
        .route("/api/cameras/{id}/lanes", post(technician::save_lane))
        .route("/api/cameras/{id}/reference", post(technician::set_reference))
        .route("/api/cameras/{id}/lanes/{lane}/reference", post(technician::set_lane_reference))
        .route("/api/config", get(technician::config))
        .route("/api/events", get(technician::events))
        .route_layer(axum::middleware::from_fn_with_state(state.tokens.clone(), auth::require));
    // Liveness and readiness stay open: probes carry no token, and they
    // reveal nothing.
    let metrics = state.metrics.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(metrics, auth::same_origin))
        .layer(axum::middleware::map_response(secure))
}

async fn secure(mut r: Response) -> Response {
    for (name, value) in SECURITY_HEADERS {
        r.headers_mut().insert(name, HeaderValue::from_static(value));
    }
    r
}

/// Binds now (so a bad address fails the start with a clear error) and
/// serves until `shutdown`.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, HttpError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })
}

/// Serves `state`'s router on `listener` until `shutdown`, with the timeouts
/// and the connection limit of the `[http]` section in force at start.
pub async fn serve(listener: tokio::net::TcpListener, state: HttpState, shutdown: Shutdown) {
    let limits = Limits::from_config(&state.config.borrow().http);
    let metrics = state.metrics.clone();
    server::serve(listener, router(state), limits, metrics, shutdown).await;
}

async fn metrics(State(s): State<HttpState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

#[cfg(test)]
mod readyz_tests;

/// Readiness, from state the data path keeps anyway: the spool's health is
/// the outcome of its last real write (a store, a delete, or the
/// publisher's retry of a failed spool), so a probe, or a flood of them,
/// writes nothing and never takes the lock analysis threads write under.
async fn readyz(State(s): State<HttpState>) -> Response {
    let models = s.metrics.models_loaded.get() == 1;
    let broker = s.metrics.mqtt_connected.get() == 1;
    let health = s.outbox.spool().health();
    let ready = models && (broker || health.ok);
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "ready": ready,
        "models_loaded": models,
        "broker_connected": broker,
        "spool_ok": health.ok,
        "spool_last_error_at": health.last_error_at.map(|t| crate::vocab::time::rfc3339::format(&t)),
    });
    (code, Json(body)).into_response()
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
    let encode = move |rgb: &[u8], w, h| crate::alert::snapshot::render(rgb, w, h, quality, |_| {});
    match tokio::task::spawn_blocking(move || frame.jpeg(Instant::now(), encode)).await.ok().flatten() {
        Some((jpeg, encoded)) => {
            if encoded {
                s.metrics.http.snapshot_encodes.with_label_values(&[id.as_str()]).inc();
            }
            ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-store")], jpeg).into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("camera {id:?} has no frame yet\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn snapshot_encodes_at_most_once_a_second_and_never_under_the_frame_lock() {
        let f = LatestFrame::new("c");
        assert!(f.jpeg(Instant::now(), |_, _, _| Some(vec![1])).is_none(), "no frame yet, nothing encoded");
        f.store(&[10u8; 2 * 2 * 3], 2, 2, SystemTime::now());
        let encodes = Cell::new(0);
        let encode = |rgb: &[u8], w: u32, h: u32| {
            encodes.set(encodes.get() + 1);
            // The analysis thread must be able to store while a viewer encodes.
            assert!(f.frame.try_lock().is_ok(), "the frame lock is held during the encode");
            f.store(&[20u8; 2 * 2 * 3], 2, 2, SystemTime::now());
            assert_eq!((rgb, w, h), (&[10u8; 12][..], 2, 2), "the encode reads the frame it took, not the new one");
            Some(vec![encodes.get() as u8])
        };
        let t0 = Instant::now();
        let (first, encoded) = f.jpeg(t0, encode).unwrap();
        assert!(encoded && encodes.get() == 1);
        // Within the second: the same JPEG, no encode.
        let (again, encoded) = f.jpeg(t0 + Duration::from_millis(999), |_, _, _| panic!("encoded twice")).unwrap();
        assert!(!encoded && again == first);
        // A second later: a new encode, of the frame stored meanwhile.
        let (later, encoded) = f
            .jpeg(t0 + ENCODE_EVERY, |rgb: &[u8], _, _| {
                assert_eq!(rgb, &[20u8; 12][..]);
                Some(vec![99])
            })
            .unwrap();
        assert!(encoded && later.as_ref() == [99]);
        // The real encoder makes a JPEG.
        let (jpeg, _) =
            f.jpeg(t0 + 3 * ENCODE_EVERY, |rgb, w, h| crate::alert::snapshot::render(rgb, w, h, 80, |_| {})).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    }
}
