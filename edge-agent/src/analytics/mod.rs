//! Stage 5 of the data path: turning per-frame detections into events.
//!
//! Rules are plain state machines fed `(time, detections)` and returning
//! transitions. They never read a clock or touch I/O, so every rule is tested
//! on scripted sequences without sleeping. The caller ([`crate::pipeline`])
//! owns one rule instance per lane per camera and turns transitions into
//! [`crate::alert::Event`]s.

mod geometry;
mod lane;

pub use geometry::{point_in_polygon, polygon_area, Polygon};
pub use lane::{LaneRule, LaneTransition, Phase};
