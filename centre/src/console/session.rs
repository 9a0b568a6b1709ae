//! Logging in and out, and who is asking. A session is a random token in
//! an HttpOnly, SameSite=Strict cookie; the database keeps its hash, the
//! user it belongs to, its CSRF token and its end. Failed logins are
//! rate-limited per name and per address, and every login, failure and
//! logout is audited.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{me_json, ApiError, Console};
use crate::access::{check_name, decoy_hash, random_token, same_secret, token_hash, verify_password, User};
use crate::store::{millis, AuditEntry};

/// The session cookie's name.
const COOKIE: &str = "aw_session";

/// The header every change carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    name: String,
    password: String,
}

pub async fn login(
    State(console): State<Arc<Console>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::BadRequest(format!("login: {}", e.body_text())))?;
    let ip = from.ip();
    if check_name(&body.name).is_err() || body.password.len() > 1024 {
        return Err(ApiError::Unauthorized("wrong name or password"));
    }
    if !console.logins.allows(&body.name, ip, Instant::now()) {
        console.store.audit(AuditEntry::new(Some(&body.name), "login_limited", None, None).from(ip)).await?;
        return Err(ApiError::TooMany("too many failed logins; wait and try again"));
    }
    let found = console.store.user_login(&body.name).await?;
    let phc = found.as_ref().map_or_else(|| decoy_hash().to_string(), |(phc, _, _)| phc.clone());
    let password = body.password;
    // Argon2 is slow on purpose; keep it off the async workers.
    let matches = tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let Some((_, role, scope)) = found.filter(|_| matches) else {
        console.logins.failed(&body.name, ip, Instant::now());
        console.store.audit(AuditEntry::new(Some(&body.name), "login_failed", None, None).from(ip)).await?;
        tracing::info!(user = %body.name, %ip, "failed login");
        return Err(ApiError::Unauthorized("wrong name or password"));
    };
    console.logins.succeeded(&body.name);
    let (token, csrf) = (random_token(), random_token());
    let now = SystemTime::now();
    let lifetime = Duration::from_secs(u64::from(console.config.console.session_hours) * 3600);
    let audit = AuditEntry::new(Some(&body.name), "login", None, None).from(ip);
    console.store.add_session(&token_hash(&token), &body.name, &csrf, now, millis(now + lifetime), audit).await?;
    let user = User { name: body.name, role, scope, csrf };
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        lifetime.as_secs(),
        if console.config.console.secure_cookies { "; Secure" } else { "" }
    );
    Ok(([(header::SET_COOKIE, cookie)], Json(me_json(&user, &console.config))).into_response())
}

pub async fn logout(
    State(console): State<Arc<Console>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    user: User,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_csrf(&headers, &user)?;
    if let Some(token) = cookie(&headers) {
        let audit = AuditEntry::new(Some(&user.name), "logout", None, None).from(from.ip());
        console.store.end_session(&token_hash(token), audit).await?;
    }
    let expired = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, expired)]).into_response())
}

pub async fn me(State(console): State<Arc<Console>>, user: User) -> Json<serde_json::Value> {
    Json(me_json(&user, &console.config))
}

/// A change must echo the session's CSRF token: another site can make the
/// browser send the cookie, never read the token.
pub fn check_csrf(headers: &HeaderMap, user: &User) -> Result<(), ApiError> {
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if same_secret(sent, &user.csrf) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("missing or wrong CSRF token; reload the page".into()))
    }
}

/// A change also needs a role that acts.
pub fn check_acts(user: &User) -> Result<(), ApiError> {
    if user.role.acts() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("a {} cannot change alerts", user.role.as_str())))
    }
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl FromRequestParts<Arc<Console>> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<User, ApiError> {
        let token = cookie(&parts.headers).ok_or(ApiError::Unauthorized("log in first"))?;
        let user = console.store.session_user(&token_hash(token), SystemTime::now()).await?;
        user.ok_or(ApiError::Unauthorized("the session has ended; log in again"))
    }
}
