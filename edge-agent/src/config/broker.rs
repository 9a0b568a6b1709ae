//! `[broker]`: the command centres' MQTT broker, and how the agent
//! authenticates to it.

use std::path::PathBuf;

use serde::Deserialize;

use super::check::{fail, topic_safe, Check};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    pub(crate) host: String,
    #[serde(default = "default_broker_port")]
    pub(crate) port: u16,
    /// Use TLS to the broker.
    #[serde(default)]
    pub(crate) tls: bool,
    /// PEM file with the CA that signed the broker's certificate (TLS only).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `client_key`).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default)]
    pub(crate) username: Option<String>,
    /// Inline password. Prefer `password_file`, so the config can be shown
    /// and shared without the secret.
    #[serde(default)]
    pub(crate) password: Option<String>,
    /// A file whose first line is the password (read at start: a changed
    /// password needs a restart).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// First level of every topic.
    #[serde(default = "default_topic_root")]
    pub(crate) topic_root: String,
    /// MQTT keep-alive; also bounds how fast the broker notices a dead agent
    /// and publishes its last will.
    #[serde(default = "default_keep_alive_s")]
    pub(crate) keep_alive_s: u64,
}

impl Broker {
    pub(super) fn validate(&self) -> Check {
        let b = self;
        if b.host.trim().is_empty() {
            return fail("broker.host", "must not be empty");
        }
        if b.port == 0 {
            return fail("broker.port", "must be 1–65535");
        }
        if b.tls && b.ca_file.is_none() {
            return fail("broker.ca_file", "is required when broker.tls = true");
        }
        if !b.tls && b.ca_file.is_some() {
            return fail("broker.tls", "ca_file is set but tls is false");
        }
        if (b.password.is_some() || b.password_file.is_some()) && b.username.is_none() {
            return fail("broker.username", "is required when a password is set");
        }
        if b.password.is_some() && b.password_file.is_some() {
            return fail("broker.password_file", "set either password or password_file, not both");
        }
        if b.client_cert.is_some() != b.client_key.is_some() {
            return fail("broker.client_key", "client_cert and client_key go together");
        }
        if !b.tls && b.client_cert.is_some() {
            return fail("broker.tls", "client_cert is set but tls is false");
        }
        for (i, level) in b.topic_root.split('/').enumerate() {
            topic_safe(level).or_else(|m| fail("broker.topic_root", format!("level {}: {m}", i + 1)))?;
        }
        if b.keep_alive_s < 5 {
            return fail("broker.keep_alive_s", "must be at least 5");
        }
        Ok(())
    }
}

fn default_broker_port() -> u16 {
    1883
}
fn default_topic_root() -> String {
    "alleywatch".into()
}
fn default_keep_alive_s() -> u64 {
    15
}
