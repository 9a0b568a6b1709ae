//! The bottom floor: the words every layer uses, with no dependency on any
//! of them. Rules make [`Phase`]s, the alert stage sends them with a
//! [`Severity`] and an [`EventKind`], models and rules and snapshots speak
//! in [`BBox`]es about a [`FrameInput`], and payloads, status and logs write time one way
//! ([`time`]). Everything here is also part of the MQTT contract
//! (`deploy/schema/`), which is why it lives below both the agent's stages
//! and whatever else reads those messages.

mod frame;
pub mod geometry;
mod kinds;
pub(crate) mod time;

pub use frame::FrameInput;
pub use geometry::{point_in_polygon, polygon_area, BBox, Polygon};
pub(crate) use kinds::{EventKind, Phase, Severity};
