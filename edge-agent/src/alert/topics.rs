//! The agent's topics: the contract's layout (`alleywatch_contract::topics`,
//! shared with the command centre) under this agent's root, site and id.
//!
//! Every level comes from validated config ids (topic-safe) or from ids the
//! agent makes itself; no URL ever reaches a topic.

pub use alleywatch_contract::Topics;

use crate::config::Config;

/// The topics of the agent `config` describes.
pub fn topics_of(config: &Config) -> Topics {
    Topics::new(&config.broker.topic_root, &config.site.path(), &config.agent_id)
}
