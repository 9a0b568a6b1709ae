//! The bottom floor: the words every layer uses, with no dependency on any
//! of them. Rules make [`Phase`]s, the alert stage sends them with a
//! [`Severity`] and an [`EventKind`], models and rules and snapshots speak
//! in [`BBox`]es about a [`FrameInput`], and payloads, status and logs write time one way
//! ([`time`]). The kinds and the time format are the MQTT contract's own
//! words (the `alleywatch-contract` crate, shared with the command centre),
//! named here so that every layer finds them in one place.

mod frame;
pub mod geometry;
pub(crate) mod time;

pub(crate) use alleywatch_contract::{EventKind, Phase, Severity};
pub use frame::FrameInput;
pub use geometry::{point_in_polygon, polygon_area, BBox, Polygon};
