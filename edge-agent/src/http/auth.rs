//! The gates in front of everything but liveness and readiness: the token
//! (who may read, who may change) and the origin of a change (no other web
//! page may drive this one).
//!
//! On loopback (the default bind) no token is needed: whoever can reach the
//! port is already on the box. Bound anywhere else, the config must name a
//! token, and then every request must carry one, as `Authorization: Bearer
//! …` (Prometheus, scripts) or as the cookie a browser gets by opening the
//! page once with `?token=…`.
//!
//! Two tokens: `http.token` reads (the page's views, `/api`, `/metrics`);
//! `http.change_token` reads and changes (every request that is not a GET or
//! HEAD: lanes, references). A config with `http.token` alone keeps its old
//! meaning, one token for both, and the agent says so at start; one with
//! `http.change_token` alone needs that token for everything.
//!
//! Without a token, requests must name a loopback host (`localhost`,
//! `127.0.0.1`, `[::1]`): a web page in the technician's browser could
//! otherwise point a host name of its own at 127.0.0.1 (DNS rebinding) and
//! read snapshots or save lanes through the browser.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::metrics::Metrics;

const COOKIE: &str = "alleywatch_token";

/// The configured tokens. `read` grants GET and HEAD; `change` grants
/// everything. Both `None`: the loopback-host rule instead.
#[derive(Clone, Default)]
pub struct Tokens {
    pub(crate) read: Option<Arc<str>>,
    pub(crate) change: Option<Arc<str>>,
}

/// What a presented token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Grant {
    Read,
    Change,
}

impl Tokens {
    /// From `http.token` and `http.change_token`. A read token with no
    /// change token beside it grants both (configs from before the split).
    pub(crate) fn new(read: Option<String>, change: Option<String>) -> Tokens {
        let (read, change): (Option<Arc<str>>, Option<Arc<str>>) = (read.map(Arc::from), change.map(Arc::from));
        match (read, change) {
            (Some(r), None) => Tokens { read: None, change: Some(r) },
            (read, change) => Tokens { read, change },
        }
    }

    /// Both tokens from the config, files read; an error names the key.
    pub fn from_config(http: &crate::config::Http) -> Result<Tokens, String> {
        let (read, change) = (http.read_token()?, http.read_change_token()?);
        // The config checks inline tokens; tokens from files are only
        // known here. The same token in both would let a reader change.
        if read.is_some() && read == change {
            return Err("http.token and http.change_token are the same token: the read token must not change".into());
        }
        Ok(Tokens::new(read, change))
    }

    fn any(&self) -> bool {
        self.read.is_some() || self.change.is_some()
    }

    /// What `t` allows, if it is one of the tokens.
    fn grant(&self, t: &str) -> Option<Grant> {
        let is = |k: &Option<Arc<str>>| k.as_deref().is_some_and(|k| same(t.as_bytes(), k.as_bytes()));
        if is(&self.change) {
            Some(Grant::Change)
        } else if is(&self.read) {
            Some(Grant::Read)
        } else {
            None
        }
    }
}

/// Whether a request may change state: every method but GET and HEAD
/// counts as a change (OPTIONS and unknown methods included), so a route
/// added later cannot slip past the change token or the origin check.
pub(crate) fn changes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// The token middleware: passes a request whose token grants its method,
/// turns `?token=` into a cookie, answers 401 without a token and 403 with
/// a read-only token on a change.
pub(crate) async fn require(State(tokens): State<Tokens>, req: Request, next: Next) -> Response {
    if !tokens.any() {
        if loopback_host(req.headers()) {
            return next.run(req).await;
        }
        return (
            StatusCode::FORBIDDEN,
            "this listener answers loopback host names only (localhost, 127.0.0.1); set http.token_file to serve others\n",
        )
            .into_response();
    }
    let needed = if changes(req.method()) { Grant::Change } else { Grant::Read };
    if let Some(grant) = presented(req.headers()).and_then(|t| tokens.grant(t)) {
        if grant >= needed {
            return next.run(req).await;
        }
        return (
            StatusCode::FORBIDDEN,
            "this token may only read: changes (lanes, references) need http.change_token\n",
        )
            .into_response();
    }
    if let Some(t) = query_token(req.uri().query()) {
        if tokens.grant(t).is_some() {
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

/// The origin middleware, on every route: a change must come from this
/// page or from outside any browser. A browser names where a request comes
/// from (`Sec-Fetch-Site`, `Origin`); a request that names neither came
/// from a program or from a browser too old to send them, and such a
/// browser can only post across sites as an HTML form, so the form content
/// types are refused there. Answers 403 naming the header.
pub(crate) async fn same_origin(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    if changes(req.method()) {
        if let Err(why) = change_origin(req.headers()) {
            metrics.http.cross_site_refused.inc();
            return (StatusCode::FORBIDDEN, format!("refused: {why}\n")).into_response();
        }
    }
    next.run(req).await
}

/// Whether a change's headers show it comes from this page (or from no
/// browser at all); `Err` says which header refused it.
pub(crate) fn change_origin(headers: &HeaderMap) -> Result<(), String> {
    let text = |h: header::HeaderName| headers.get(h).map(|v| v.to_str().unwrap_or("\u{fffd}").to_string());
    let site = text(header::HeaderName::from_static("sec-fetch-site"));
    if let Some(site) = &site {
        if !matches!(site.as_str(), "same-origin" | "none") {
            return Err(format!("Sec-Fetch-Site: {site:?}: changes are accepted from this agent's own page only"));
        }
    }
    let origin = text(header::ORIGIN);
    if let Some(origin) = &origin {
        let host = text(header::HOST).unwrap_or_default();
        let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        if authority.is_none_or(|a| !a.eq_ignore_ascii_case(&host)) {
            return Err(format!(
                "Origin {origin:?} is not this agent ({host:?}): changes are accepted from this agent's own page only"
            ));
        }
    }
    // A form from a browser too old to send either header is refused; a
    // request with an `Authorization` header is not a form (a browser
    // cannot add one across sites without a preflight, which the agent
    // never grants), so `curl -d … -H 'Authorization: …'` works.
    if site.is_none() && origin.is_none() && !headers.contains_key(header::AUTHORIZATION) {
        let kind = text(header::CONTENT_TYPE).unwrap_or_default().to_ascii_lowercase();
        let form = ["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"];
        if form.iter().any(|f| kind.trim_start().starts_with(f)) {
            return Err(format!(
                "Content-Type {kind:?} without Origin: a change is sent as application/json (or with no body)"
            ));
        }
    }
    Ok(())
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
    // Compared as digests: fixed length, so neither the time nor an early
    // return on a length mismatch tells a guesser the token's length.
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in list {
            m.insert(header::HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn a_change_must_come_from_this_page_or_from_no_browser() {
        let host = ("host", "127.0.0.1:9464");
        let ok = |h: &[(&'static str, &'static str)]| change_origin(&headers(h));
        // The page's own fetch (Chromium sends both).
        assert!(ok(&[host, ("origin", "http://127.0.0.1:9464"), ("sec-fetch-site", "same-origin")]).is_ok());
        // A program: no browser headers, JSON or no body.
        assert!(ok(&[host]).is_ok());
        assert!(ok(&[host, ("content-type", "application/json")]).is_ok());
        // Another page's form, by each header alone.
        let e = ok(&[host, ("origin", "https://evil.example"), ("content-type", "application/x-www-form-urlencoded")])
            .unwrap_err();
        assert!(e.contains("Origin") && e.contains("evil.example"), "{e}");
        let e = ok(&[host, ("sec-fetch-site", "cross-site")]).unwrap_err();
        assert!(e.contains("Sec-Fetch-Site"), "{e}");
        assert!(ok(&[host, ("sec-fetch-site", "same-site")]).is_err(), "a sibling host is another page");
        assert!(ok(&[host, ("origin", "null")]).is_err(), "a sandboxed frame or a file");
        assert!(ok(&[host, ("origin", "http://127.0.0.1:9465")]).is_err(), "another port is another origin");
        assert!(ok(&[("origin", "http://127.0.0.1:9464")]).is_err(), "no Host to match");
        // An old browser's form with no Origin at all.
        let e = ok(&[host, ("content-type", "application/x-www-form-urlencoded")]).unwrap_err();
        assert!(e.contains("Content-Type"), "{e}");
        assert!(ok(&[host, ("content-type", "text/plain;charset=UTF-8")]).is_err());
        assert!(ok(&[host, ("content-type", "multipart/form-data; boundary=x")]).is_err());
        // curl -d with a bearer token: not a browser's form.
        assert!(
            ok(&[host, ("content-type", "application/x-www-form-urlencoded"), ("authorization", "Bearer x")]).is_ok()
        );
        // …but a cross-site page's header still refuses it.
        let evil = ("origin", "https://evil.example");
        assert!(ok(&[host, evil, ("content-type", "text/plain"), ("authorization", "Bearer x")]).is_err());
        assert!(
            changes(&Method::POST) && changes(&Method::OPTIONS) && !changes(&Method::GET) && !changes(&Method::HEAD)
        );
    }

    #[test]
    fn the_same_token_in_both_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["read", "change"] {
            std::fs::write(dir.path().join(name), "same-token-in-both-files\n").unwrap();
        }
        let http: crate::config::Http = toml::from_str(&format!(
            "token_file = {:?}\nchange_token_file = {:?}",
            dir.path().join("read"),
            dir.path().join("change")
        ))
        .unwrap();
        let e = Tokens::from_config(&http).err().expect("refused");
        assert!(e.contains("http.token and http.change_token are the same"), "{e}");
    }

    #[test]
    fn the_read_token_reads_and_the_change_token_changes() {
        let both = Tokens::new(Some("read-read-read-read".into()), Some("change-change-change".into()));
        assert_eq!(both.grant("read-read-read-read"), Some(Grant::Read));
        assert_eq!(both.grant("change-change-change"), Some(Grant::Change));
        assert_eq!(both.grant("read-read-read-reaX"), None);
        // One token alone (a config from before the split): it grants both.
        let legacy = Tokens::new(Some("read-read-read-read".into()), None);
        assert_eq!(legacy.grant("read-read-read-read"), Some(Grant::Change));
        let change_only = Tokens::new(None, Some("change-change-change".into()));
        assert!(change_only.any() && change_only.grant("anything-anything").is_none());
        assert!(!Tokens::new(None, None).any());
    }
}
