//! The agent's answer to a centre's command, on `{base}/replies`: which
//! command, for which event or request, and whether it took effect.
//! Exactly one per command the agent read (see
//! [`crate::schema::REPLY`]).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    /// `ack`, `resolve`, `set`, `reference`, or the unknown name that was
    /// sent.
    pub command: String,
    /// Echoed from the command when it was a string within its limit.
    pub request_id: Option<String>,
    pub event_id: Option<String>,
    pub by: Option<String>,
    pub ok: bool,
    /// Why it did not take effect.
    pub error: Option<String>,
    #[serde(with = "crate::time::rfc3339")]
    pub at: SystemTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_matches_its_schema_and_reads_back_the_same() {
        let r = Reply {
            command: "ack".into(),
            request_id: Some("r-1".into()),
            event_id: Some("0b9f6c1e-5d7a-4a39-9e1b-2f0c7d3a1b22".into()),
            by: Some("op-1".into()),
            ok: false,
            error: Some("no open event with this id".into()),
            at: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_284_800),
        };
        let json = serde_json::to_value(&r).unwrap();
        let schema: serde_json::Value = serde_json::from_str(crate::schema::REPLY).unwrap();
        let validator = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(&json).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{errors:#?}\n{json:#}");
        assert_eq!(serde_json::from_value::<Reply>(json).unwrap(), r);
    }
}
