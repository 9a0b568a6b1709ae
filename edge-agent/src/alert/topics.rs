//! The topic layout of the MQTT contract (see the README).
//!
//! ```text
//! {root}/{site}/{agent}/status                              retained agent state, will = offline
//! {root}/{site}/{agent}/cameras/{camera}/status             retained camera state
//! {root}/{site}/{agent}/events/{kind}                       event JSON
//! {root}/{site}/{agent}/events/{kind}/{event_id}/snapshot   JPEG
//! {root}/{site}/{agent}/commands/{ack|resolve|set}          from the centre
//! {root}/{site}/{agent}/replies                             the agent's answers to commands
//! ```
//!
//! Every level comes from validated config ids (topic-safe) or from ids the
//! agent makes itself; no URL ever reaches a topic.

use crate::config::Config;

#[derive(Debug, Clone)]
pub struct Topics {
    base: String,
}

impl Topics {
    pub fn new(config: &Config) -> Topics {
        Topics { base: format!("{}/{}/{}", config.broker.topic_root, config.site.path(), config.agent_id) }
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn agent_status(&self) -> String {
        format!("{}/status", self.base)
    }

    pub(crate) fn camera_status(&self, camera: &str) -> String {
        format!("{}/cameras/{camera}/status", self.base)
    }

    pub(crate) fn event(&self, kind: &str) -> String {
        format!("{}/events/{kind}", self.base)
    }

    pub(crate) fn snapshot(&self, kind: &str, event_id: &str) -> String {
        format!("{}/events/{kind}/{event_id}/snapshot", self.base)
    }

    /// Answers to commands (`ack`, `resolve`, `set`).
    pub(crate) fn replies(&self) -> String {
        format!("{}/replies", self.base)
    }

    pub(crate) fn commands(&self) -> String {
        format!("{}/commands/#", self.base)
    }
}
