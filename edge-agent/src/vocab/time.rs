//! Time as the payloads, status messages and the technician's page write
//! it: RFC 3339, UTC, milliseconds.

/// RFC 3339 (UTC, milliseconds) for `SystemTime` fields
/// (`#[serde(with = "crate::vocab::time::rfc3339")]`).
pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    pub(crate) fn format(t: &SystemTime) -> String {
        humantime::format_rfc3339_millis(*t).to_string()
    }

    pub(crate) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }
}

/// As [`rfc3339`], for optional fields (`null` when absent).
pub(crate) mod rfc3339_opt {
    use std::time::SystemTime;

    pub(crate) fn serialize<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::rfc3339::format(t)),
            None => s.serialize_none(),
        }
    }
}
