//! Stage 6 of the data path: events and statuses out to the command centres.
//!
//! - [`event`]: the event payload (the MQTT contract's JSON).
//! - [`evidence`]: each rule's transition as a [`compose::Draft`]: evidence,
//!   parameters, model, snapshot marks.
//! - [`compose`]: a draft into the message (id, wall times, camera,
//!   snapshot), the same for every rule.
//! - [`snapshot`]: the JPEG that goes with each event, boxes and lane drawn.
//! - [`topics`]: the topic layout, in one place.
//! - [`outbox`]: where analysis and supervisors hand their messages in.
//! - [`ledger`]: the closed loop with the centres (ack, resolve, escalate).
//! - [`spool`]: the durable queue (SQLite) every event waits in until the
//!   broker acknowledges it; it also owns the persistent `seq`.
//! - [`publisher`]: the MQTT client (QoS 1, retained statuses, last will,
//!   commands), draining the spool in order.
//!
//! ```text
//! analysis ─▶ Outbox ─▶ Ledger ─▶ Spool (on disk) ─▶ Publisher ─▶ broker
//!                                                      ▲   │ commands/#
//! supervisors ─▶ Outbox (latest status per camera) ────┘   ▼ ack/resolve → Ledger, set → reload
//! ```

pub(crate) mod compose;
pub(crate) mod event;
pub(crate) mod evidence;
pub(crate) mod ledger;
pub(crate) mod outbox;
pub(crate) mod publisher;
pub mod snapshot;
pub(crate) mod spool;
pub(crate) mod topics;

pub(crate) use compose::{Composer, Draft, EventKey};
pub(crate) use event::Event;
pub use ledger::Ledger;
pub use outbox::Outbox;
pub use publisher::{Publisher, PublisherError, MAX_INCOMING_PACKET};
pub use spool::{Spool, SpoolError};
pub use topics::{topics_of, Topics};

use crate::source::CameraStatus;

/// A message for the command centres.
#[derive(Debug)]
pub enum Outbound {
    /// An event and its JPEG snapshot.
    Event { event: Box<Event>, snapshot: Option<Vec<u8>> },
    /// A camera's retained status.
    Camera(CameraStatus),
    /// End an open event now (its rule or camera went away): the alert
    /// stage sends the `end`, built from the event's last message and
    /// marked with `reason`, so a centre can tell it from a scene that
    /// cleared.
    Close { event_id: String, reason: CloseReason },
}

/// Why the agent ended an event itself (the event's `closed` field).
pub use alleywatch_contract::event::CloseReason;
