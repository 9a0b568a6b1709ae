//! Time as the payloads, status messages and the technician's page write
//! it: RFC 3339, UTC, milliseconds. The format is part of the MQTT
//! contract, so it lives there; the agent's modules name it through here
//! (`#[serde(with = "crate::vocab::time::rfc3339")]`).

pub(crate) use alleywatch_contract::time::rfc3339;
