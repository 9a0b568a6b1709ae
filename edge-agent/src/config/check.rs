//! The checks serde cannot express, in one vocabulary: each section's
//! `validate` returns a [`Check`], the key path and message of its first
//! problem, which [`super::Config::parse`] then locates in the file.

pub(super) use alleywatch_tomlconfig::{fail, Check};

/// `v >= min`, and not NaN or infinite (TOML allows both).
pub(super) fn at_least(v: f64, min: f64) -> bool {
    v.is_finite() && v >= min
}

/// Topic levels and ids: no MQTT wildcards or separators, nothing that needs
/// escaping in a URL or a metric label. The contract's rule, so a centre
/// accepts exactly the ids an agent can have.
pub(super) use alleywatch_contract::check_level as topic_safe;

pub(super) fn check_url(url: &str) -> Result<(), String> {
    let shown = crate::redact::redact_url(url);
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("rtsp" | "rtsps" | "file" | "test") => {}
        Some(other) => return Err(format!("{shown}: unsupported scheme {other:?} (use rtsp, rtsps, file or test)")),
        None => return Err(format!("{shown}: not a URL (expected rtsp://host/path)")),
    }
    let rest = &url[url.find("://").map(|i| i + 3).unwrap_or(0)..];
    if rest.is_empty() {
        return Err(format!("{shown}: nothing after the scheme"));
    }
    if url.chars().any(char::is_whitespace) {
        return Err(format!("{shown}: contains whitespace"));
    }
    Ok(())
}
