//! `[detector]`: the object detector every camera's lanes share — its
//! model file and output layout, thresholds, sessions, analysis rate and
//! motion gate.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::check::{fail, Check};
use super::{ModelSession, Precision, Provider};

/// Which output layout (and matching preprocessing) a detector model uses.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// NanoDet (GFL heads per stride; BGR mean/std input). The default model.
    Nanodet,
    /// YOLOX: `[1, anchors, 5 + classes]`, raw grid offsets, BGR 0–255 input.
    Yolox,
    /// YOLOv8 / YOLO11 export: `[1, 4 + classes, anchors]`, RGB 0–1 input.
    Yolov8,
    /// MobileNetV3-CenterNet (TF.js): `[1, 100, 6]`, NHWC RGB 0–255 input.
    Centernet,
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ModelFormat::Nanodet => "nanodet",
            ModelFormat::Yolox => "yolox",
            ModelFormat::Yolov8 => "yolov8",
            ModelFormat::Centernet => "centernet",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detector {
    /// The ONNX file. Relative paths are resolved against the config file.
    pub path: PathBuf,
    pub format: ModelFormat,
    /// Square model input side in pixels (letterboxed).
    pub(crate) input_size: u32,
    /// Class names in model order. Default: the 80 COCO names.
    #[serde(default)]
    pub(crate) labels: Option<Vec<String>>,
    /// Detections below this score are discarded before the rules see them.
    #[serde(default = "default_score_threshold")]
    pub score_threshold: f32,
    /// IoU above which two boxes of one class are the same object.
    #[serde(default = "default_nms_iou")]
    pub(crate) nms_iou: f32,
    /// Expected sha256 of the file. Default: the entry for this file in the
    /// `models.toml` manifest next to it, when there is one.
    #[serde(default)]
    pub sha256: Option<String>,
    /// ONNX Runtime intra-op threads.
    #[serde(default = "crate::config::session::default_threads")]
    pub(crate) threads: usize,
    /// ONNX Runtime sessions of this model that cameras share: as many
    /// frames run at once.
    #[serde(default = "crate::config::session::default_sessions")]
    pub(crate) sessions: usize,
    /// Most frames, from different cameras, that one inference may carry
    /// when the model has a dynamic batch axis: frames that find every
    /// session busy run together on the next free one. 1 turns it off.
    /// Default ([`Detector::batch`]): 1 on the CPU, where single-threaded
    /// sessions side by side measured better (benches/README.md), 4 on an
    /// accelerator.
    #[serde(default)]
    pub(crate) batch: Option<usize>,
    /// `fp32` (the file `path` names) or `int8` (its quantised variant).
    #[serde(default)]
    pub(crate) precision: Precision,
    /// ONNX Runtime execution provider: `cpu`, `cuda`, `tensorrt` or
    /// `openvino` (the loaded library must have it).
    #[serde(default)]
    pub(crate) execution_provider: Provider,
    /// When the library lacks `execution_provider`: warn and use the CPU
    /// instead of refusing to start.
    #[serde(default)]
    pub(crate) fallback: bool,
    /// Analysis rate of the detector (it serves the lane rules), frames per
    /// second: a lane blocks over many seconds, so a low rate loses nothing
    /// and leaves the CPU to the fall rule, which needs the camera's fps.
    #[serde(default = "default_detector_fps")]
    pub(crate) fps: f64,
    /// Skip the detector on frames where nothing moved since its last run.
    #[serde(default)]
    pub(crate) motion_gate: MotionGate,
}

/// `[detector.motion_gate]`: when the detector may skip a frame (see
/// `infer::gate`). Skipped frames reuse the last run's detections.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MotionGate {
    pub(crate) enabled: bool,
    /// Fraction of the frame's thumbnail pixels that must have changed
    /// since the last run for the detector to run again.
    pub(crate) min_changed: f64,
    /// Grey-level difference (0–255) that counts a thumbnail pixel changed;
    /// above sensor noise and compression flicker.
    pub(crate) pixel_delta: u8,
    /// The detector runs at least this often whatever the gate sees, so a
    /// change too slow or too small for it is still found.
    pub(crate) full_check_s: f64,
}

impl Default for MotionGate {
    fn default() -> Self {
        MotionGate { enabled: true, min_changed: 0.002, pixel_delta: 10, full_check_s: 5.0 }
    }
}

impl Detector {
    /// The configured `batch`, or its default for the execution provider.
    pub(crate) fn batch(&self) -> usize {
        self.batch.unwrap_or(match self.execution_provider {
            Provider::Cpu => 1,
            _ => 4,
        })
    }

    /// Its ONNX Runtime session keys.
    pub(crate) fn session(&self) -> ModelSession<'_> {
        ModelSession {
            section: "detector",
            path: &self.path,
            sha256: self.sha256.as_deref(),
            threads: self.threads,
            sessions: Some(self.sessions),
            precision: self.precision,
            provider: self.execution_provider,
            fallback: self.fallback,
        }
    }

    pub(super) fn validate(&self) -> Check {
        let d = self;
        if d.input_size < 32 || d.input_size > 2048 || d.input_size % 32 != 0 {
            return fail(
                "detector.input_size",
                format!("{} is not a multiple of 32 between 32 and 2048", d.input_size),
            );
        }
        if !(0.0..=1.0).contains(&d.score_threshold) {
            return fail("detector.score_threshold", format!("{} is outside 0–1", d.score_threshold));
        }
        if !(0.0..=1.0).contains(&d.nms_iou) {
            return fail("detector.nms_iou", format!("{} is outside 0–1", d.nms_iou));
        }
        d.session().validate()?;
        if let Some(b) = d.batch.filter(|b| !(1..=16).contains(b)) {
            return fail("detector.batch", format!("{b} is outside 1–16"));
        }
        if !(d.fps > 0.0 && d.fps <= 60.0) {
            return fail("detector.fps", format!("{} is outside (0, 60]", d.fps));
        }
        let g = &d.motion_gate;
        if !(0.0..=1.0).contains(&g.min_changed) {
            return fail("detector.motion_gate.min_changed", format!("{} is outside 0–1", g.min_changed));
        }
        if g.pixel_delta == 0 {
            return fail("detector.motion_gate.pixel_delta", "must be 1–255");
        }
        if !(g.full_check_s > 0.0 && g.full_check_s <= 3600.0) {
            return fail("detector.motion_gate.full_check_s", format!("{} is outside (0, 3600]", g.full_check_s));
        }
        if let Some(l) = &d.labels {
            if l.is_empty() {
                return fail("detector.labels", "must not be empty");
            }
        }
        Ok(())
    }
}

fn default_score_threshold() -> f32 {
    0.35
}
fn default_nms_iou() -> f32 {
    0.6
}
fn default_detector_fps() -> f64 {
    2.0
}
