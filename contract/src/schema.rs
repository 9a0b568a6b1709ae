//! The JSON Schemas of the payloads (draft 2020-12), embedded so that a
//! program or a test holds exactly the contract it was built with. The
//! files themselves sit beside this crate in `schema/`, for people and
//! other tools.

/// An event message on `…/events/{kind}` (`alleywatch.event.v1`).
pub const EVENT: &str = include_str!("../schema/event.schema.json");
/// A centre's command on `…/commands/{ack|resolve|set|reference}`.
pub const COMMAND: &str = include_str!("../schema/command.schema.json");
/// The agent's answer on `…/replies`.
pub const REPLY: &str = include_str!("../schema/reply.schema.json");

#[cfg(test)]
mod tests {
    #[test]
    fn every_schema_compiles_and_refuses_an_empty_object() {
        for (name, text) in [("event", super::EVENT), ("command", super::COMMAND), ("reply", super::REPLY)] {
            let schema: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let v = jsonschema::options().build(&schema).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!v.is_valid(&serde_json::json!({})), "{name} accepts {{}}");
        }
    }
}
