//! The MQTT event contract (`alleywatch_contract::schema::EVENT`, the file
//! `contract/schema/event.schema.json`), as the end-to-end tests check
//! payloads against it.

use serde_json::Value;

/// The event schema compiled, formats (date-time, ...) checked too.
pub fn event_schema() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(alleywatch_contract::schema::EVENT).unwrap();
    jsonschema::options().should_validate_formats(true).build(&schema).expect("schema compiles")
}

/// Panics with every violation when `v` does not match the schema.
pub fn assert_valid(validator: &jsonschema::Validator, v: &Value) {
    let errors: Vec<String> = validator.iter_errors(v).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "payload does not match contract/schema/event.schema.json: {errors:#?}\n{v:#}");
}
