//! The MQTT event contract, `deploy/schema/event.schema.json`, as the
//! end-to-end tests check payloads against it.

use serde_json::Value;

use crate::files::project_file;

/// The event schema compiled, formats (date-time, ...) checked too.
pub fn event_schema() -> jsonschema::Validator {
    let path = project_file("deploy/schema/event.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::options().should_validate_formats(true).build(&schema).expect("schema compiles")
}

/// Panics with every violation when `v` does not match the schema.
pub fn assert_valid(validator: &jsonschema::Validator, v: &Value) {
    let errors: Vec<String> = validator.iter_errors(v).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "payload does not match deploy/schema/event.schema.json: {errors:#?}\n{v:#}");
}
