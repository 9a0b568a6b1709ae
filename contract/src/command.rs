//! The commands a centre sends to an agent, on
//! `{base}/commands/{name}` (see [`crate::schema::COMMAND`]). The agent
//! reads them field by field so that its errors can name the field; these
//! types are what a centre writes, checked against the same schema.

use serde::{Deserialize, Serialize};

/// `commands/ack`: someone has the event in hand.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    pub event_id: String,
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `commands/resolve`: the event is closed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resolve {
    pub event_id: String,
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `commands/set`: rule parameters to change, by dotted key path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Set {
    pub by: String,
    pub changes: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_match_their_schema() {
        // Checked against each command's own definition: an ack without a
        // note has the shape of a resolve, so the top level's oneOf cannot
        // tell them apart (the topic does).
        let schema: serde_json::Value = serde_json::from_str(crate::schema::COMMAND).unwrap();
        let ack = Ack { event_id: "e-1".into(), by: "op-1".into(), note: Some("on it".into()), request_id: None };
        let resolve = Resolve { event_id: "e-1".into(), by: "op-1".into(), request_id: Some("r-1".into()) };
        for (name, json) in
            [("ack", serde_json::to_value(&ack).unwrap()), ("resolve", serde_json::to_value(&resolve).unwrap())]
        {
            let validator = jsonschema::options().build(&schema["$defs"][name]).unwrap();
            let errors: Vec<String> = validator.iter_errors(&json).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{errors:#?}\n{json:#}");
        }
    }
}
