//! The MQTT contract between alleywatch edge agents and the command
//! centres, in one place so that the two sides can never disagree:
//!
//! - [`topics`]: the topic layout, built by an agent and parsed by a centre;
//! - [`kinds`]: what an event is ([`EventKind`]), where it is in its life
//!   ([`Phase`]) and how urgent ([`Severity`]);
//! - [`time`]: the one time format of payloads and statuses (RFC 3339,
//!   UTC, milliseconds);
//! - [`event`]: the event message, [`command`]: what a centre sends, [`status`]: the retained agent and
//!   camera statuses, [`reply`]: the answer to a command;
//! - [`schema`]: the JSON Schemas of the event, command and reply payloads,
//!   which tests validate real payloads against.
//!
//! The crate has no I/O and no dependency on either program: it is the
//! words both speak.

pub mod command;
pub mod event;
pub mod kinds;
pub mod reply;
pub mod schema;
pub mod status;
pub mod time;
pub mod topics;

pub use kinds::{EventKind, Phase, Severity};
pub use topics::{check_level, Topic, Topics};
