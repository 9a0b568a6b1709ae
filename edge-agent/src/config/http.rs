//! `[http]`: the listener for metrics, health, `/api` and the
//! technician's page, its tokens and its connection bounds.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::check::{fail, Check};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    /// Address of the metrics/health listener. Loopback by default: the box
    /// should not expose it unless the technician says so.
    pub(crate) bind: SocketAddr,
    /// Bearer token every path but `/healthz` and `/readyz` then needs.
    /// Required (or `change_token`) when `bind` is not loopback. Prefer
    /// `token_file`. With a `change_token` beside it, this token only
    /// reads (Prometheus, the page's views); alone, it also changes (the
    /// behaviour before the two were split, with a warning at start).
    pub(crate) token: Option<String>,
    /// A file whose first line is the token.
    pub(crate) token_file: Option<PathBuf>,
    /// The token that may change lanes and references (every request that
    /// is not a GET or HEAD). It reads too. Prefer `change_token_file`.
    pub(crate) change_token: Option<String>,
    /// A file whose first line is the change token.
    pub(crate) change_token_file: Option<PathBuf>,
    /// Seconds a connection has to deliver a whole request head, from its
    /// opening or from the previous response (so it also ends idle
    /// keep-alive connections): sockets that never send a request are
    /// closed instead of held.
    pub(crate) header_timeout_s: f64,
    /// Seconds with nothing read or written, mid-request included (a
    /// stalled upload, a client that stops reading), before a connection is
    /// closed. Keep it above 30 s: a change waits up to 30 s for the agent.
    pub(crate) idle_timeout_s: f64,
    /// Open connections at most; one more is answered 503 and closed, so
    /// idle sockets cannot use up the process's file descriptors.
    pub(crate) max_connections: usize,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            bind: SocketAddr::from(([127, 0, 0, 1], 9464)),
            token: None,
            token_file: None,
            change_token: None,
            change_token_file: None,
            header_timeout_s: 10.0,
            idle_timeout_s: 60.0,
            max_connections: 64,
        }
    }
}

/// A token goes into headers, a cookie and a query string unescaped: at
/// least 16 characters, URL- and cookie-safe ones only.
fn check_token(t: &str) -> Result<(), String> {
    if t.len() < 16 {
        return Err("must be at least 16 characters (e.g. `openssl rand -hex 24`)".into());
    }
    if !t.chars().all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c)) {
        return Err("may use only letters, digits and - . _ ~ (e.g. `openssl rand -hex 24`)".into());
    }
    Ok(())
}

impl Http {
    /// The configured token, read from `token_file` if that is how it is
    /// given. An error names the key and the file.
    pub fn read_token(&self) -> Result<Option<String>, String> {
        token_from(&self.token, &self.token_file, "http.token_file")
    }

    /// The change token, read from `change_token_file` if that is how it is
    /// given. An error names the key and the file.
    pub fn read_change_token(&self) -> Result<Option<String>, String> {
        token_from(&self.change_token, &self.change_token_file, "http.change_token_file")
    }
}

fn token_from(inline: &Option<String>, file: &Option<PathBuf>, key: &str) -> Result<Option<String>, String> {
    match (inline, file) {
        (Some(t), _) => Ok(Some(t.clone())),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{key} {}: {e}", f.display()))?;
            let line = text.lines().next().unwrap_or("").trim().to_string();
            check_token(&line).map_err(|m| format!("{key} {}: the token {m}", f.display()))?;
            Ok(Some(line))
        }
        (None, None) => Ok(None),
    }
}

impl Http {
    pub(super) fn validate(&self) -> Check {
        let h = self;
        if h.token.is_some() && h.token_file.is_some() {
            return fail("http.token_file", "set either token or token_file, not both");
        }
        if let Some(t) = &h.token {
            check_token(t).or_else(|m| fail("http.token", m))?;
        }
        if h.change_token.is_some() && h.change_token_file.is_some() {
            return fail("http.change_token_file", "set either change_token or change_token_file, not both");
        }
        if let Some(t) = &h.change_token {
            check_token(t).or_else(|m| fail("http.change_token", m))?;
            if h.token.as_ref() == Some(t) {
                return fail("http.change_token", "must differ from http.token (the read-only token)");
            }
        }
        let tokens = [&h.token, &h.change_token].iter().any(|t| t.is_some())
            || [&h.token_file, &h.change_token_file].iter().any(|t| t.is_some());
        if !h.bind.ip().is_loopback() && !tokens {
            return fail(
                "http.token_file",
                format!(
                    "http.bind {} is not loopback: set http.token_file (or http.token) so the page, /api and /metrics need a token",
                    h.bind
                ),
            );
        }
        if !(h.header_timeout_s > 0.0 && h.header_timeout_s <= 3600.0) {
            return fail("http.header_timeout_s", format!("{} must be > 0 and ≤ 3600", h.header_timeout_s));
        }
        if !(h.idle_timeout_s > 0.0 && h.idle_timeout_s <= 86400.0) {
            return fail("http.idle_timeout_s", format!("{} must be > 0 and ≤ 86400", h.idle_timeout_s));
        }
        if !(1..=65536).contains(&h.max_connections) {
            return fail("http.max_connections", format!("{} must be 1–65536", h.max_connections));
        }
        Ok(())
    }
}
