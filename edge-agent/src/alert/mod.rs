//! Stage 6 of the data path: events and statuses out to the command centres.
//!
//! - [`event`]: the event payload (the MQTT contract's JSON), built from rule
//!   transitions.
//! - [`snapshot`]: the JPEG that goes with each event, boxes and lane drawn.
//! - [`topics`]: the topic layout, in one place.
//! - [`publisher`]: the MQTT client (QoS 1, retained statuses, last will).
//!
//! Everything reaches the publisher as an [`Outbound`] message on one
//! channel, in the order it happened. The durable spool (no alert lost
//! across broker outages and restarts) slots in between that channel and
//! the MQTT client; see [`publisher`].

pub mod event;
pub mod publisher;
pub mod snapshot;
pub mod topics;

pub use event::{Event, EventKind, Severity};
pub use publisher::{Publisher, PublisherError};
pub use topics::Topics;

use crate::source::CameraStatus;

/// A message for the command centres.
#[derive(Debug)]
pub enum Outbound {
    /// An event and its JPEG snapshot.
    Event { event: Box<Event>, snapshot: Option<Vec<u8>> },
    /// A camera's retained status.
    Camera(CameraStatus),
}

/// RFC 3339 (UTC, milliseconds) for `SystemTime` fields.
pub mod rfc3339 {
    use std::time::SystemTime;

    pub fn format(t: &SystemTime) -> String {
        humantime::format_rfc3339_millis(*t).to_string()
    }

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }
}

/// As [`rfc3339`], for optional fields (`null` when absent).
pub mod rfc3339_opt {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::rfc3339::format(t)),
            None => s.serialize_none(),
        }
    }
}
