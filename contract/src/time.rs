//! Time as payloads, statuses and replies write it: RFC 3339, UTC,
//! milliseconds. Agents write it; centres read it back with the same
//! module, so a timestamp round-trips exactly.

/// RFC 3339 (UTC, milliseconds) for `SystemTime` fields
/// (`#[serde(with = "alleywatch_contract::time::rfc3339")]`).
pub mod rfc3339 {
    use std::time::SystemTime;

    use serde::Deserialize;

    pub fn format(t: &SystemTime) -> String {
        humantime::format_rfc3339_millis(*t).to_string()
    }

    /// Reads any RFC 3339 time with a `Z` offset, the only one agents write.
    pub fn parse(s: &str) -> Result<SystemTime, humantime::TimestampError> {
        humantime::parse_rfc3339_weak(s)
    }

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        parse(&s).map_err(|e| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time: {e}")))
    }
}

/// As [`rfc3339`], for optional fields (`null` when absent).
pub mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::Deserialize;

    pub fn serialize<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::rfc3339::format(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        match Option::<std::borrow::Cow<'de, str>>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::rfc3339::parse(&s)
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Stamped {
        #[serde(with = "super::rfc3339")]
        at: SystemTime,
        #[serde(with = "super::rfc3339_opt")]
        ended: Option<SystemTime>,
    }

    #[test]
    fn a_written_time_reads_back_to_the_millisecond() {
        let at = UNIX_EPOCH + Duration::from_millis(1_796_284_800_123);
        let s = Stamped { at, ended: None };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"at":"2026-12-03T08:00:00.123Z","ended":null}"#);
        assert_eq!(serde_json::from_str::<Stamped>(&json).unwrap(), s);
        let e: Stamped =
            serde_json::from_str(r#"{"at":"2026-12-03T08:00:00.123Z","ended":"2026-12-03T08:00:01Z"}"#).unwrap();
        assert_eq!(e.ended, Some(at + Duration::from_millis(877)));
        let bad = serde_json::from_str::<Stamped>(r#"{"at":"yesterday","ended":null}"#).unwrap_err();
        assert!(bad.to_string().contains("\"yesterday\" is not an RFC 3339 time"), "{bad}");
    }
}
