//! The token gate in front of everything but liveness and readiness.
//!
//! On loopback (the default bind) no token is needed: whoever can reach the
//! port is already on the box. Bound anywhere else, the config must name a
//! token (`http.token_file`), and then every request must carry it, as
//! `Authorization: Bearer …` (Prometheus, scripts) or as the cookie a
//! browser gets by opening the page once with `?token=…`.
//!
//! Without a token, requests must name a loopback host (`localhost`,
//! `127.0.0.1`, `[::1]`): a web page in the technician's browser could
//! otherwise point a host name of its own at 127.0.0.1 (DNS rebinding) and
//! read snapshots or save lanes through the browser.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

const COOKIE: &str = "alleywatch_token";

/// The middleware: passes a request with the token, turns `?token=` into a
/// cookie, and answers 401 otherwise.
pub async fn require(State(token): State<Option<Arc<str>>>, req: Request, next: Next) -> Response {
    let Some(token) = token else {
        if loopback_host(req.headers()) {
            return next.run(req).await;
        }
        return (
            StatusCode::FORBIDDEN,
            "this listener answers loopback host names only (localhost, 127.0.0.1); set http.token_file to serve others\n",
        )
            .into_response();
    };
    if presented(req.headers()).is_some_and(|t| same(t.as_bytes(), token.as_bytes())) {
        return next.run(req).await;
    }
    if let Some(t) = query_token(req.uri().query()) {
        if same(t.as_bytes(), token.as_bytes()) {
            // Keep the token out of the address bar, history and logs.
            let cookie = format!("{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict");
            return (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, req.uri().path().to_string()), (header::SET_COOKIE, cookie)],
            )
                .into_response();
        }
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "token required: send Authorization: Bearer <http.token>, or open the page once with ?token=<http.token>\n",
    )
        .into_response()
}

/// The token a request carries in its `Authorization` header or cookie.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(b) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return b.strip_prefix("Bearer ").map(str::trim);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Whether the `Host` header names this machine's loopback (any port).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    matches!(name.to_ascii_lowercase().as_str(), "localhost" | "127.0.0.1" | "::1")
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("token="))
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn token_from_header_cookie_or_query() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(presented(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; alleywatch_token=xyz; b=2"));
        assert_eq!(presented(&h), Some("xyz"));
        assert_eq!(presented(&HeaderMap::new()), None);
        assert_eq!(query_token(Some("x=1&token=t0k")), Some("t0k"));
        assert!(same(b"secret", b"secret") && !same(b"secret", b"secreT") && !same(b"s", b"secret"));
    }

    #[test]
    fn only_loopback_host_names_pass_without_a_token() {
        let host = |h: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_static(h));
            loopback_host(&m)
        };
        assert!(host("127.0.0.1:9464") && host("localhost") && host("LOCALHOST:80") && host("[::1]:9464"));
        assert!(!host("evil.example:9464") && !host("127.0.0.1.evil.example") && !host("10.0.0.5:9464"));
        assert!(!loopback_host(&HeaderMap::new()), "no Host header: refused");
    }
}
