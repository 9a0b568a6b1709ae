//! The console: the web page operators work in, and the JSON it reads.
//! Every path but the page itself and its two static files needs a
//! session; every answer is cut to the user's scope; every change needs
//! the session's CSRF token and a role that may make it, and is audited.
//!
//! - [`session`]: login, logout, who is asking (the [`User`] extractor);
//! - [`board`]: the board, an alert's detail, snapshots, the live stream;
//! - [`steps`]: the loop's steps (assess, dispatch, handled, close);
//! - [`tune`]: a camera's rule parameters, sent to its agent as `set`.

mod board;
mod session;
mod steps;
mod tune;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use tokio::sync::Semaphore;

use crate::access::limit::LoginLimit;
use crate::access::User;
use crate::commands::Commands;
use crate::config::Config;
use crate::live::Live;
use crate::store::{Store, StoreError};

/// What the console's handlers share.
pub struct Console {
    pub config: Arc<Config>,
    pub store: Store,
    pub live: Live,
    pub commands: Commands,
    logins: LoginLimit,
    streams: Arc<Semaphore>,
}

impl Console {
    pub fn new(config: Arc<Config>, store: Store, live: Live, commands: Commands) -> Console {
        let logins = LoginLimit::new(
            config.console.login_attempts,
            std::time::Duration::from_secs(config.console.login_window_s),
        );
        let streams = Arc::new(Semaphore::new(config.console.max_streams));
        Console { config, store, live, commands, logins, streams }
    }
}

/// The console's routes; the caller adds health and metrics beside them.
pub fn router(console: Arc<Console>) -> Router {
    // A handler's photo arrives as base64 inside JSON: 4/3 of the snapshot
    // bound, and room for the note.
    let body_limit = console.config.snapshots.max_snapshot_kib as usize * 1024 * 4 / 3 + 64 * 1024;
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", include_str!("assets/index.html")) }))
        .route(
            "/console.js",
            get(|| async { page("text/javascript; charset=utf-8", include_str!("assets/console.js")) }),
        )
        .route("/console.css", get(|| async { page("text/css; charset=utf-8", include_str!("assets/console.css")) }))
        .route("/api/login", post(session::login))
        .route("/api/logout", post(session::logout))
        .route("/api/me", get(session::me))
        .route("/api/alerts", get(board::board))
        .route("/api/alerts/{id}", get(board::detail))
        .route("/api/alerts/{id}/{step}", post(steps::step))
        .route("/api/snapshots/{sha256}", get(board::snapshot))
        .route("/api/live", get(board::live))
        .route("/api/fleet", get(board::fleet))
        .route("/api/tune", post(tune::tune))
        .route("/api/replies/{request_id}", get(tune::reply))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::map_response(security_headers))
        .with_state(console)
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The page loads nothing but itself: no inline script, no other origin,
/// no framing. API answers are never cached (they are per user).
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: blob:; media-src 'self' data:; style-src 'self'; \
             script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Why a console request was refused; the body is `{"error": …}`.
#[derive(Debug)]
pub enum ApiError {
    /// No session, or an expired one.
    Unauthorized(&'static str),
    /// A session, but not the role or the CSRF token for this.
    Forbidden(String),
    /// Unknown, or outside the user's scope: the same answer for both.
    NotFound,
    BadRequest(String),
    /// Not the next step of the loop, or someone acted first.
    Conflict(String),
    TooMany(&'static str),
    Unavailable(&'static str),
    /// Logged here; the user gets no detail.
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.to_string()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "no such thing in your scope".to_string()),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::TooMany(m) => (StatusCode::TOO_MANY_REQUESTS, m.to_string()),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m.to_string()),
            ApiError::Internal(e) => {
                tracing::error!("console: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the centre's log".to_string())
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

/// The JSON of `/api/me` and of a successful login.
fn me_json(user: &User, config: &Config) -> serde_json::Value {
    serde_json::json!({
        "name": user.name,
        "role": user.role.as_str(),
        "scope": user.scope.to_string(),
        "csrf": user.csrf,
        "centre": {
            "name": config.centre.name,
            "level": config.centre.level.as_str(),
            "site": config.centre.site,
        },
    })
}
