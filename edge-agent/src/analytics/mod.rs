//! Stage 5 of the data path: turning per-frame detections into events.
//!
//! - [`tracker`]: detections → tracks with ids that survive a missed frame
//!   (one tracker for detector objects, one for pose people, per camera);
//! - [`lane`]: tracked objects standing in a lane past its dwell time;
//! - [`fall`]: tracked people going from upright to lying, fast;
//! - [`fire`]: fire-model regions hitting k of n frames and passing the
//!   [`flicker`] check (flame colour and shape change, smoke persistence);
//! - [`motion`]: grey thumbnails and how much of a region changed (the fall
//!   rule's cue for people the pose model loses).
//!
//! Rules are plain state machines fed `(time, tracks)` and returning
//! transitions. They never read a clock or touch I/O, so every rule is tested
//! on scripted sequences without sleeping. The caller
//! ([`crate::camera`]) owns the rule instances of a camera and
//! turns transitions into [`crate::alert::Event`]s.

pub mod fall;
pub mod fire;
pub mod flicker;
mod lane;
pub mod obstruction;
pub mod tracker;

pub use fall::{FallFeatures, FallRule, FallTransition};
pub use fire::{FireRule, FireTransition};
pub use lane::{Cause, LaneRule, LaneTransition};
pub use tracker::{Track, Tracker, TrackerParams};
