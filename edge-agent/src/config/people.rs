//! Config of the people path: the pose model, tracking, and the fall rule.
//!
//! Kept apart from the core file shape in `config/mod.rs` because these are
//! the knobs operators tune most. Every fall parameter has a global default
//! under `[falls]` and may be overridden per camera in `cameras[].falls`;
//! [`super::Config::falls_for`] gives the merged values for a camera.

use std::path::PathBuf;

use serde::Deserialize;

pub use super::falls::{FallOverrides, Falls};

/// The pose model (MoveNet MultiPose). Falls run only when it is configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pose {
    /// The ONNX file. Relative paths are resolved against the config file.
    pub path: PathBuf,
    /// Long side of the model input in pixels (a multiple of 32). The frame
    /// is scaled so its long side fits and the short side is padded up to a
    /// multiple of 32: a 16:9 frame at 384 becomes 384×224.
    #[serde(default = "default_pose_input")]
    pub(crate) input_size: u32,
    /// People overlapping more than this IoU are one person.
    #[serde(default = "default_pose_nms")]
    pub(crate) nms_iou: f32,
    /// A person scoring at least this starts a track.
    #[serde(default = "default_pose_high")]
    pub(crate) track_score: f32,
    /// A tracked person is followed down to this score. Lying people score
    /// far lower than standing ones (see `models/models.toml`), so this is
    /// much lower than `track_score`.
    #[serde(default = "default_pose_low")]
    pub(crate) min_score: f32,
    /// Expected sha256; default from `models.toml` next to the file.
    #[serde(default)]
    pub sha256: Option<String>,
    /// A frame whose mean luma (0–255) is below this has its levels
    /// stretched before the pose model sees it (`infer/lowlight.rs`; 0:
    /// never). Dim scenes squeeze people into a few grey levels.
    #[serde(default = "default_low_light_below")]
    pub(crate) low_light_below: f32,
    #[serde(default = "crate::config::session::default_threads")]
    pub(crate) threads: usize,
    /// ONNX Runtime sessions of this model that cameras share: as many
    /// frames run at once.
    #[serde(default = "crate::config::session::default_sessions")]
    pub(crate) sessions: usize,
    /// `fp32` (the file `path` names) or `int8` (its quantised variant).
    #[serde(default)]
    pub(crate) precision: crate::config::Precision,
    /// ONNX Runtime execution provider: `cpu`, `cuda`, `tensorrt` or
    /// `openvino` (the loaded library must have it).
    #[serde(default)]
    pub(crate) execution_provider: crate::config::Provider,
    /// When the library lacks `execution_provider`: warn and use the CPU
    /// instead of refusing to start.
    #[serde(default)]
    pub(crate) fallback: bool,
}

/// How detections become tracks (both the object and the person tracker).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tracking {
    /// Detector objects between this and `detector.score_threshold` only
    /// extend existing tracks (ByteTrack's second stage).
    #[serde(default = "default_low_score")]
    pub(crate) low_score: f32,
    /// Minimum IoU to match a high-score detection to a track.
    #[serde(default = "default_match_iou")]
    pub(crate) match_iou: f32,
    /// Minimum IoU to match a low-score detection to a confirmed track.
    #[serde(default = "default_low_match_iou")]
    pub(crate) low_match_iou: f32,
    /// Consecutive matches before a new track counts.
    #[serde(default = "default_min_hits")]
    pub(crate) min_hits: u32,
    /// Seconds a confirmed track survives without a match.
    #[serde(default = "default_max_age_s")]
    pub(crate) max_age_s: f64,
}

impl Default for Tracking {
    fn default() -> Self {
        Tracking {
            low_score: default_low_score(),
            match_iou: default_match_iou(),
            low_match_iou: default_low_match_iou(),
            min_hits: default_min_hits(),
            max_age_s: default_max_age_s(),
        }
    }
}

fn default_pose_input() -> u32 {
    384
}
fn default_pose_nms() -> f32 {
    0.6
}
fn default_pose_high() -> f32 {
    0.2
}
fn default_pose_low() -> f32 {
    0.05
}
fn default_low_light_below() -> f32 {
    70.0
}
fn default_low_score() -> f32 {
    0.15
}
fn default_match_iou() -> f32 {
    0.3
}
fn default_low_match_iou() -> f32 {
    0.2
}
fn default_min_hits() -> u32 {
    2
}
fn default_max_age_s() -> f64 {
    2.0
}

impl Pose {
    /// Its ONNX Runtime session keys.
    pub(crate) fn session(&self) -> super::ModelSession<'_> {
        super::ModelSession {
            section: "pose",
            path: &self.path,
            sha256: self.sha256.as_deref(),
            threads: self.threads,
            sessions: Some(self.sessions),
            precision: self.precision,
            provider: self.execution_provider,
            fallback: self.fallback,
        }
    }
}

/// Checks the people-path sections; returns the key path and message of the
/// first problem.
pub(super) fn validate(
    pose: Option<&Pose>,
    tracking: &Tracking,
    falls: &Falls,
    high: f32,
) -> Result<(), (String, String)> {
    let err = |k: &str, m: String| Err((k.to_string(), m));
    if let Some(p) = pose {
        if !(32..=1024).contains(&p.input_size) || p.input_size % 32 != 0 {
            return err("pose.input_size", format!("{} is not a multiple of 32 between 32 and 1024", p.input_size));
        }
        if !(p.nms_iou > 0.0 && p.nms_iou <= 1.0) {
            return err("pose.nms_iou", format!("{} is outside (0, 1]", p.nms_iou));
        }
        if !(0.0..=1.0).contains(&p.track_score) {
            return err("pose.track_score", format!("{} is outside 0–1", p.track_score));
        }
        if !(0.0..=p.track_score).contains(&p.min_score) {
            return err("pose.min_score", format!("{} must be between 0 and pose.track_score", p.min_score));
        }
        if !(0.0..=255.0).contains(&p.low_light_below) {
            return err("pose.low_light_below", format!("{} is outside 0–255 (mean luma)", p.low_light_below));
        }
        p.session().validate()?;
    }
    let t = tracking;
    if !(0.0..=high).contains(&t.low_score) {
        return err("tracking.low_score", format!("{} must be between 0 and detector.score_threshold", t.low_score));
    }
    for (k, v) in [("tracking.match_iou", t.match_iou), ("tracking.low_match_iou", t.low_match_iou)] {
        if !(v > 0.0 && v <= 1.0) {
            return err(k, format!("{v} is outside (0, 1]"));
        }
    }
    if t.min_hits == 0 {
        return err("tracking.min_hits", "must be at least 1".into());
    }
    if !(t.max_age_s.is_finite() && t.max_age_s >= 0.0) {
        return err("tracking.max_age_s", "must be ≥ 0".into());
    }
    falls.validate("falls")
}
