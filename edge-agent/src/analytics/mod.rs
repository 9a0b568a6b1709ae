//! Stage 5 of the data path: turning per-frame model output into event
//! transitions.
//!
//! - [`tracker`]: detections → tracks with ids that survive a missed frame
//!   (one tracker for detector objects, one for pose people, per camera);
//! - [`lane`](LaneRule): tracked objects, or the class-agnostic
//!   [`obstruction`] cue, keeping a lane blocked past its dwell time;
//! - [`fall`]: tracked people going from upright to down, fast, and staying
//!   down (the long lie);
//! - [`fire`]: fire-model regions hitting k of n frames and passing the
//!   [`flicker`] check (flame colour and shape change, smoke persistence).
//!
//! Rules are plain state machines fed `(time, tracks or regions)` and
//! returning transitions. They never read a clock, so every rule is tested
//! on scripted sequences without sleeping. The one piece of I/O here is the
//! obstruction cue's clear references, which persist as small PNG files
//! through [`obstruction::ObstructionCue::save`] and `load`: called by the
//! camera's lane stage (`crate::camera`), never by a rule on a frame. The
//! camera's stages own the rule instances; `crate::alert::evidence` and
//! `crate::alert::compose` turn their transitions into event messages.

pub(crate) mod fall;
pub(crate) mod fire;
pub mod flicker;
mod lane;
pub mod obstruction;
pub(crate) mod tracker;

pub use fall::{FallFeatures, FallRule, FallTransition};
pub use fire::{FireRule, FireTransition};
pub use lane::{Cause, LaneRule, LaneTransition};
pub use tracker::{Track, Tracker, TrackerParams};
